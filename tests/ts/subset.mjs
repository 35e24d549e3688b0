// Subset snapshots of a Baton worker through ElectricSQL's official client,
// unchanged: a Shape in log=changes_only mode from offset=now (as TanStack
// DB's on-demand sync uses it) loads subsets with requestSnapshot and
// merges them with the live log; fetchSnapshot reads subsets alone.
//
//   node subset.mjs <base url> <table>
//
// The table has an int "id" primary key and an int "v" column. Commands
// come on stdin, one JSON object a line; each is answered with one JSON
// line on stdout:
//
//   {"op":"fetch","log":"full"|"changes_only","atHandle":h,"atOffset":o, ...subset}
//       fetchSnapshot on a stream of its own (at handle h and offset o
//       when given): {"metadata":{...},"data":[...],"handle":...}
//   {"op":"snapshot", ...subset}
//       Shape.requestSnapshot: {"handle":"<the stream's handle>"}
//   {"op":"hold"} / {"op":"release"}
//       from hold on, the stream's log requests (not its subset requests)
//       wait in the client, as on a slow network, until release: {}.
//       hold first waits (up to 10 s) until a live log request is on its
//       way to the server, so that exactly one change-carrying response
//       still arrives after it: {"live":bool}, false if none came
//   {"op":"await","values":{"<id>":v,...},"ms":N}
//       waits until the rows the Shape holds are exactly those ids with
//       those v (or N ms passed): {"ok":bool,"rows":{...},"seq":{...},
//       "handle":"<the stream's handle>"}
//
// subset is the client's SubsetParams: where, params, orderBy, limit,
// offset, method (GET or POST). seq maps each id to the v values the
// client applied to it, in order, since its row was last inserted
// (a snapshot row or an insert), as the Shape applies them: a change lost
// shows as a gap, a change applied twice as a repeat.
import { createInterface } from 'node:readline'
import { ShapeStream, Shape } from '@electric-sql/client'

const [base, table] = process.argv.slice(2)
if (!base || !table) {
  console.error('usage: node subset.mjs <base url> <table>')
  process.exit(2)
}
const secret = process.env.BATON_SECRET ? { secret: process.env.BATON_SECRET } : {}
const onError = (err) => {
  console.error(`shape error: ${err?.status ?? ''} ${err?.message ?? err}`)
  return {}
}

// held, while log requests are held (op hold), resolves on release.
let held = null
let release = () => {}
// liveInFlight counts the live log requests sent and not yet answered.
let liveInFlight = 0
const fetchClient = async (input, init) => {
  const url = String(input?.url ?? input)
  const log = !url.includes('subset__') && (init?.method ?? 'GET') === 'GET'
  if (held && log) {
    const signal = init?.signal
    await new Promise((resolve, reject) => {
      const abort = () => reject(signal.reason ?? new DOMException('aborted', 'AbortError'))
      if (signal?.aborted) return abort()
      signal?.addEventListener('abort', abort, { once: true })
      held.then(resolve)
    })
  }
  const live = log && url.includes('live=true')
  if (live) liveInFlight++
  try {
    return await fetch(input, init)
  } finally {
    if (live) liveInFlight--
  }
}

const stream = new ShapeStream({
  url: `${base}/v1/shape`,
  params: { table, ...secret },
  log: 'changes_only',
  offset: 'now',
  onError,
  fetchClient,
})
const shape = new Shape(stream)

// seq follows the Shape's rule for changes_only: updates and deletes
// count only for rows it saw inserted.
const seq = new Map()
stream.subscribe((msgs) => {
  for (const m of msgs) {
    if (m.headers?.control === 'must-refetch') seq.clear()
    if (!m.headers?.operation) continue
    const id = String(m.value?.id ?? m.key)
    switch (m.headers.operation) {
      case 'insert':
        seq.set(id, [Number(m.value.v)])
        break
      case 'update':
        if (seq.has(id) && m.value.v !== undefined) seq.get(id).push(Number(m.value.v))
        break
      case 'delete':
        seq.delete(id)
        break
    }
  }
}, onError)

const reply = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const rowsNow = () => Object.fromEntries([...shape.currentRows].map((r) => [String(r.id), Number(r.v)]))

function matches(values) {
  const rows = rowsNow()
  const want = Object.entries(values)
  return Object.keys(rows).length === want.length && want.every(([id, v]) => rows[id] === v)
}

async function run(cmd) {
  const { op, log, ms, values, atHandle, atOffset, ...subset } = cmd
  switch (op) {
    case 'fetch': {
      // atHandle and atOffset, when given, are the stream's position (a
      // stale handle is answered 409, and the client asks again).
      const at = atHandle ? { handle: atHandle, offset: atOffset } : {}
      const s = new ShapeStream({ url: `${base}/v1/shape`, params: { table, ...secret }, log, subscribe: false, onError, ...at })
      const { metadata, data } = await s.fetchSnapshot(subset)
      return { metadata, data, handle: s.shapeHandle }
    }
    case 'snapshot':
      await shape.requestSnapshot(subset)
      return { handle: stream.shapeHandle }
    case 'hold': {
      // Checked and set in one turn of the event loop: the live request
      // in flight is answered as usual, the next one waits.
      const deadline = Date.now() + 10000
      while (liveInFlight === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5))
      }
      held ??= new Promise((r) => (release = r))
      return { live: liveInFlight > 0 }
    }
    case 'release':
      held = null
      release()
      return {}
    case 'await': {
      const deadline = Date.now() + (ms ?? 30000)
      while (!matches(values) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20))
      }
      return { ok: matches(values), rows: rowsNow(), seq: Object.fromEntries(seq), handle: stream.shapeHandle }
    }
  }
  throw new Error(`unknown op ${op}`)
}

// Commands run one at a time, in order.
let queue = Promise.resolve()
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue
  queue = queue.then(async () => {
    try {
      reply(await run(JSON.parse(line)))
    } catch (e) {
      reply({ error: `${e?.status ?? ''} ${e?.message ?? e}`, body: e?.json ?? e?.text })
    }
  })
}
await queue
process.exit(0)
