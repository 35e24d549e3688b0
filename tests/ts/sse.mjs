// Follows one shape of a Baton worker with ElectricSQL's official client,
// unchanged, with options follow.mjs does not set: live updates over
// server-sent events (`liveSse: true`) and/or starting at offset "now",
// or fetching the rows once and exiting only when they are all written (a
// large shape's rows fill more than a pipe's buffer). It prints one JSON
// line each:
//
//   {"rows":[...]}     the Shape's rows, sorted by "id", each time it is up
//                      to date (int8 values, BigInt, as strings)
//   {"request":{...}}  every HTTP request the client made: url, status,
//                      content-type, and whether it asked for SSE
//   {"anomaly":"..."}  a change message that does not fit the rows the
//                      stream delivered before it: an insert of a key
//                      already present (a duplicate) or an update or delete
//                      of a key not present (a change missed before it);
//                      not checked when starting at "now"
//
// A fallback from SSE to long-polling (which the client announces with a
// console warning) is printed on stderr.
//
//   node sse.mjs <base url> <table> [sse] [now] [once]
import { ShapeStream, Shape } from '@electric-sql/client'

const [base, table, ...flags] = process.argv.slice(2)
if (!base || !table || flags.some((f) => !['sse', 'now', 'once'].includes(f))) {
  console.error('usage: node sse.mjs <base url> <table> [sse] [now] [once]')
  process.exit(2)
}

const out = (o, done) =>
  process.stdout.write(JSON.stringify(o, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n', done)

const fetchClient = async (input, init) => {
  const url = String(input instanceof Request ? input.url : input)
  let res
  try {
    res = await fetch(input, init)
  } catch (err) {
    out({ request: { url, error: String(err?.name ?? err) } })
    throw err
  }
  out({
    request: {
      url,
      sse: new URL(url).searchParams.get('live_sse') === 'true',
      status: res.status,
      contentType: res.headers.get('content-type'),
    },
  })
  return res
}

// BATON_SECRET, when set, is sent as the secret parameter (as a server-side
// proxy in front of Electric adds ELECTRIC_SECRET).
const secret = process.env.BATON_SECRET ? { secret: process.env.BATON_SECRET } : {}

const stream = new ShapeStream({
  url: `${base}/v1/shape`,
  params: { table, ...secret },
  subscribe: !flags.includes('once'),
  liveSse: flags.includes('sse'),
  ...(flags.includes('now') ? { offset: 'now' } : {}),
  fetchClient,
  onError: (err) => {
    console.error(`shape error: ${err?.status ?? ''} ${err?.message ?? err}`)
    return {}
  },
})
const shape = new Shape(stream)

// Check each change against the keys the stream delivered before it.
const present = new Set()
stream.subscribe((messages) => {
  for (const m of messages) {
    if (m.headers?.control === 'must-refetch') present.clear()
    const op = m.headers?.operation
    if (!op || flags.includes('now')) continue
    if (op === 'insert' && present.has(m.key)) out({ anomaly: `insert of ${m.key}, already present` })
    if (op !== 'insert' && !present.has(m.key)) out({ anomaly: `${op} of ${m.key}, not present` })
    if (op === 'delete') present.delete(m.key)
    else present.add(m.key)
  }
})

function print(done) {
  const rows = [...shape.currentRows].sort((a, b) => (String(a.id) < String(b.id) ? -1 : 1))
  out({ rows }, done)
}

await shape.rows
if (flags.includes('once')) {
  stream.unsubscribeAll()
  print(() => process.exit(0))
} else {
  print()
  shape.subscribe(() => print())
}
