// What an E2B user waits for: Sandbox.create, then commands.run('echo hi')
// done, timed end to end through the official SDK, n times in a row (the
// kill after each one is not timed). Prints the percentiles; it measures,
// and asserts nothing about time. e2b_test.go runs it; by hand, after
// `make up`:
//
//	source .fsb/env && cd test/e2b && npm ci && node latency.mjs [N]
import { performance } from 'node:perf_hooks'

import { Sandbox } from 'e2b'

import { checkEnv } from './env.mjs'

checkEnv()

const n = Number(process.argv[2] ?? process.env.E2B_LATENCY_N ?? 50)
if (!Number.isInteger(n) || n < 1) {
  throw new Error(`N must be a positive integer, not ${process.argv[2] ?? process.env.E2B_LATENCY_N}`)
}

const total = []
const create = []
const run = []
for (let i = 0; i < n; i++) {
  const t0 = performance.now()
  const sbx = await Sandbox.create()
  const t1 = performance.now()
  let r, t2
  try {
    r = await sbx.commands.run('echo hi')
    t2 = performance.now()
  } finally {
    await sbx.kill()
  }
  if (r.stdout !== 'hi\n') {
    throw new Error(`sandbox ${sbx.sandboxId}: echo hi printed ${JSON.stringify(r.stdout)}`)
  }
  total.push(t2 - t0)
  create.push(t1 - t0)
  run.push(t2 - t1)
}

// percentile is the nearest-rank percentile of xs, in ms.
function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}

function line(name, xs) {
  const f = (x) => x.toFixed(1).padStart(7)
  return `${name.padEnd(28)} p50 ${f(percentile(xs, 50))} ms  p99 ${f(percentile(xs, 99))} ms  min ${f(Math.min(...xs))} ms  max ${f(Math.max(...xs))} ms`
}

console.log(`e2b latency over n=${n} sandboxes (node ${process.version}, e2b SDK, one at a time):`)
console.log(line('create -> run("echo hi") done', total))
console.log(line('  Sandbox.create', create))
console.log(line('  commands.run("echo hi")', run))
