// Follows one shape of a Baton worker with ElectricSQL's official client,
// unchanged, and prints its rows as one JSON line each time it is up to
// date: {"rows":[...]} sorted by the "id" column. int8 values (BigInt) are
// printed as strings.
//
//   node follow.mjs <base url> <table> follow   keep following (live)
//   node follow.mjs <base url> <table> once     print the rows once, exit
import { ShapeStream, Shape } from '@electric-sql/client'

const [base, table, mode = 'follow'] = process.argv.slice(2)
if (!base || !table || !['follow', 'once'].includes(mode)) {
  console.error('usage: node follow.mjs <base url> <table> follow|once')
  process.exit(2)
}

// BATON_SECRET, when set, is sent as the secret parameter (as a server-side
// proxy in front of Electric adds ELECTRIC_SECRET).
const secret = process.env.BATON_SECRET ? { secret: process.env.BATON_SECRET } : {}

const stream = new ShapeStream({
  url: `${base}/v1/shape`,
  params: { table, ...secret },
  subscribe: mode === 'follow',
  onError: (err) => {
    console.error(`shape error: ${err?.status ?? ''} ${err?.message ?? err}`)
    // Keep going on transient errors (503 while a lease moves, 5xx).
    return {}
  },
})
const shape = new Shape(stream)

const replacer = (_k, v) => (typeof v === 'bigint' ? v.toString() : v)
function print(done) {
  const rows = [...shape.currentRows].sort((a, b) => (String(a.id) < String(b.id) ? -1 : 1))
  process.stdout.write(JSON.stringify({ rows }, replacer) + '\n', done)
}

await shape.rows
if (mode === 'once') {
  // Exit only once the (possibly large) output is flushed.
  print(() => {
    stream.unsubscribeAll()
    process.exit(0)
  })
} else {
  print()
  shape.subscribe(() => print())
}
