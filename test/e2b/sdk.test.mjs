// Fast Sandbox driven by E2B's official JavaScript SDK, through its
// documented API only: what a user of E2B does, unchanged, against
// E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY. e2b_test.go starts the
// servers and runs this file with `node --test`; by hand, after `make up`:
//
//	source .fsb/env && cd test/e2b && npm ci && node --test sdk.test.mjs
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { randomBytes } from 'node:crypto'

import {
  AuthenticationError,
  CommandExitError,
  FileNotFoundError,
  FileType,
  NotFoundError,
  Sandbox,
  TimeoutError,
} from 'e2b'

import { checkEnv } from './env.mjs'

checkEnv()

// Every sandbox a test creates, so that none outlives the run.
const created = new Set()
// Labels this run's sandboxes, so Sandbox.list can find them among others.
const runId = randomBytes(6).toString('hex')

async function create(opts = {}) {
  const sbx = await Sandbox.create({ ...opts, metadata: { run: runId, ...opts.metadata } })
  created.add(sbx.sandboxId)
  return sbx
}

after(async () => {
  await Promise.allSettled([...created].map((id) => Sandbox.kill(id)))
})

// eventually retries fn until it returns a truthy value, for at most
// withinMs: for what happens after a call returns (an event delivered, a
// sandbox expired), never to time anything.
async function eventually(what, fn, withinMs = 20_000) {
  const deadline = Date.now() + withinMs
  let last
  for (;;) {
    try {
      last = await fn()
      if (last) return last
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) {
      assert.fail(`${what} did not happen within ${withinMs} ms (last: ${last})`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const decoder = new TextDecoder()
const encoder = new TextEncoder()

describe('a sandbox', { timeout: 180_000 }, () => {
  let sbx

  before(async () => {
    sbx = await create({ envs: { FROM_CREATE: 'sandbox', OVERRIDDEN: 'sandbox' } })
  })

  test('Sandbox.create gives a running sandbox of the base template', async () => {
    assert.equal(typeof sbx.sandboxId, 'string')
    assert.ok(sbx.sandboxId.length > 0)
    assert.equal(await sbx.isRunning(), true)
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.state, 'running')
    assert.equal(info.metadata.run, runId)
    assert.ok(info.endAt > info.startedAt, `endAt ${info.endAt} is not after startedAt ${info.startedAt}`)
  })

  describe('commands.run', () => {
    test('returns stdout and exit code 0', async () => {
      const r = await sbx.commands.run('echo hello')
      assert.equal(r.exitCode, 0)
      assert.equal(r.stdout, 'hello\n')
      assert.equal(r.stderr, '')
    })

    test('returns stderr apart from stdout, and streams both to callbacks', async () => {
      const out = []
      const err = []
      const r = await sbx.commands.run('echo to-out; echo to-err >&2', {
        onStdout: (d) => out.push(d),
        onStderr: (d) => err.push(d),
      })
      assert.equal(r.stdout, 'to-out\n')
      assert.equal(r.stderr, 'to-err\n')
      assert.equal(out.join(''), 'to-out\n')
      assert.equal(err.join(''), 'to-err\n')
    })

    test('throws CommandExitError with the exit code and the output', async () => {
      await assert.rejects(sbx.commands.run('echo out; echo err >&2; exit 3'), (e) => {
        assert.ok(e instanceof CommandExitError, `got ${e}`)
        assert.equal(e.exitCode, 3)
        assert.equal(e.stdout, 'out\n')
        assert.equal(e.stderr, 'err\n')
        return true
      })
    })

    test('runs as user in its home by default, as root or elsewhere when asked', async () => {
      assert.equal((await sbx.commands.run('whoami; pwd')).stdout, 'user\n/home/user\n')
      assert.equal((await sbx.commands.run('whoami', { user: 'root' })).stdout, 'root\n')
      assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n')
    })

    test("sees the sandbox's env vars under its own", async () => {
      const r = await sbx.commands.run('echo "$FROM_CREATE $OVERRIDDEN $FROM_RUN"', {
        envs: { OVERRIDDEN: 'command', FROM_RUN: 'run' },
      })
      assert.equal(r.stdout, 'sandbox command run\n')
    })

    test('runs in the background: listed while it runs, waited for after', async () => {
      const h = await sbx.commands.run('sleep 1; echo done', { background: true })
      assert.equal(typeof h.pid, 'number')
      const running = await sbx.commands.list()
      assert.ok(running.some((p) => p.pid === h.pid), `pid ${h.pid} not in ${JSON.stringify(running)}`)
      const r = await h.wait()
      assert.equal(r.exitCode, 0)
      assert.equal(r.stdout, 'done\n')
    })

    test('takes stdin with sendStdin', async () => {
      const h = await sbx.commands.run('read a; read b; echo "got $a $b"', { background: true, stdin: true })
      await sbx.commands.sendStdin(h.pid, 'one\n')
      await h.sendStdin('two\n')
      const r = await h.wait()
      assert.equal(r.stdout, 'got one two\n')
    })

    test('closeStdin ends the input', async () => {
      const h = await sbx.commands.run('cat; echo " and EOF"', { background: true, stdin: true })
      await h.sendStdin('input')
      await h.closeStdin()
      assert.equal((await h.wait()).stdout, 'input and EOF\n')
    })

    test('connects again to a command it disconnected from', async () => {
      const h = await sbx.commands.run('read go; echo "later $go"', { background: true, stdin: true })
      await h.disconnect()
      const again = await sbx.commands.connect(h.pid)
      await sbx.commands.sendStdin(h.pid, 'on\n')
      assert.equal((await again.wait()).stdout, 'later on\n')
    })

    test('kills a background command', async () => {
      const h = await sbx.commands.run('sleep 600', { background: true })
      assert.equal(await sbx.commands.kill(h.pid), true)
      await assert.rejects(h.wait(), CommandExitError)
      assert.equal(await sbx.commands.kill(h.pid), false)
    })

    test('gives up after timeoutMs with TimeoutError', async () => {
      await assert.rejects(sbx.commands.run('sleep 600', { timeoutMs: 1_000 }), TimeoutError)
    })
  })

  describe('pty', () => {
    test('create, sendInput, resize, kill', async () => {
      let output = ''
      const h = await sbx.pty.create({
        cols: 80,
        rows: 24,
        onData: (d) => {
          output += decoder.decode(d)
        },
      })
      assert.equal(typeof h.pid, 'number')
      await sbx.pty.sendInput(h.pid, encoder.encode('echo pty-$((6*7))\n'))
      await eventually('pty output pty-42', () => output.includes('pty-42'))
      await sbx.pty.sendInput(h.pid, encoder.encode('stty size\n'))
      await eventually('stty size 24 80', () => output.includes('24 80'))
      await sbx.pty.resize(h.pid, { cols: 100, rows: 30 })
      await sbx.pty.sendInput(h.pid, encoder.encode('stty size\n'))
      await eventually('stty size 30 100 after resize', () => output.includes('30 100'))
      assert.equal(await sbx.pty.kill(h.pid), true)
      await assert.rejects(h.wait(), CommandExitError)
    })
  })

  describe('files', () => {
    test('write and read text; relative paths are in the home', async () => {
      const info = await sbx.files.write('hello.txt', 'hello world')
      assert.equal(info.path, '/home/user/hello.txt')
      assert.equal(info.name, 'hello.txt')
      assert.equal(await sbx.files.read('hello.txt'), 'hello world')
      assert.equal(await sbx.files.read('/home/user/hello.txt'), 'hello world')
      assert.equal((await sbx.commands.run('cat ~/hello.txt')).stdout, 'hello world')
    })

    test('write and read bytes', async () => {
      const bytes = new Uint8Array(256 * 4)
      for (let i = 0; i < bytes.length; i++) bytes[i] = i % 256
      await sbx.files.write('/tmp/bytes.bin', bytes.buffer)
      const back = await sbx.files.read('/tmp/bytes.bin', { format: 'bytes' })
      assert.deepEqual(new Uint8Array(back), bytes)
    })

    test('write several files at once, making their directories', async () => {
      const infos = await sbx.files.write([
        { path: '/tmp/multi/a.txt', data: 'A' },
        { path: '/tmp/multi/b.txt', data: 'BB' },
        { path: '/tmp/multi/sub/c.txt', data: 'CCC' },
      ])
      assert.deepEqual(infos.map((i) => i.path).sort(), ['/tmp/multi/a.txt', '/tmp/multi/b.txt', '/tmp/multi/sub/c.txt'])
      assert.equal(await sbx.files.read('/tmp/multi/a.txt'), 'A')
      assert.equal(await sbx.files.read('/tmp/multi/b.txt'), 'BB')
      assert.equal(await sbx.files.read('/tmp/multi/sub/c.txt'), 'CCC')
    })

    test('write as application/octet-stream, plain and gzip-compressed', async () => {
      await sbx.files.write('/tmp/octet.txt', 'sent as octet-stream', { useOctetStream: true })
      assert.equal(await sbx.files.read('/tmp/octet.txt'), 'sent as octet-stream')
      await sbx.files.write('/tmp/gzip.txt', 'sent gzip-compressed', { gzip: true })
      assert.equal(await sbx.files.read('/tmp/gzip.txt'), 'sent gzip-compressed')
      assert.equal(await sbx.files.read('/tmp/gzip.txt', { gzip: true }), 'sent gzip-compressed')
    })

    test('list, exists, getInfo', async () => {
      await sbx.files.write([
        { path: '/tmp/listed/one.txt', data: '1' },
        { path: '/tmp/listed/two.txt', data: '22' },
      ])
      await sbx.files.makeDir('/tmp/listed/dir')
      const entries = await sbx.files.list('/tmp/listed')
      const byName = Object.fromEntries(entries.map((e) => [e.name, e]))
      assert.deepEqual(Object.keys(byName).sort(), ['dir', 'one.txt', 'two.txt'])
      assert.equal(byName['one.txt'].type, FileType.FILE)
      assert.equal(byName['one.txt'].path, '/tmp/listed/one.txt')
      assert.equal(byName['dir'].type, FileType.DIR)

      assert.equal(await sbx.files.exists('/tmp/listed/two.txt'), true)
      assert.equal(await sbx.files.exists('/tmp/listed/three.txt'), false)

      const info = await sbx.files.getInfo('/tmp/listed/two.txt')
      assert.equal(info.name, 'two.txt')
      assert.equal(info.type, FileType.FILE)
      assert.equal(info.size, 2)
      assert.equal(info.owner, 'user')
      assert.equal((await sbx.files.getInfo('/tmp/listed/dir')).type, FileType.DIR)
    })

    test('makeDir, rename, remove', async () => {
      assert.equal(await sbx.files.makeDir('/tmp/made/deep/er'), true)
      assert.equal(await sbx.files.makeDir('/tmp/made/deep/er'), false)
      await sbx.files.write('/tmp/made/old.txt', 'moving')
      const moved = await sbx.files.rename('/tmp/made/old.txt', '/tmp/made/new.txt')
      assert.equal(moved.path, '/tmp/made/new.txt')
      assert.equal(await sbx.files.exists('/tmp/made/old.txt'), false)
      assert.equal(await sbx.files.read('/tmp/made/new.txt'), 'moving')
      await sbx.files.remove('/tmp/made/new.txt')
      assert.equal(await sbx.files.exists('/tmp/made/new.txt'), false)
      await sbx.files.remove('/tmp/made')
      assert.equal(await sbx.files.exists('/tmp/made'), false)
    })

    test('reading a missing file throws FileNotFoundError', async () => {
      await assert.rejects(sbx.files.read('/tmp/no-such-file'), (e) => {
        assert.ok(e instanceof FileNotFoundError, `got ${e}`)
        assert.ok(e instanceof NotFoundError)
        return true
      })
    })

    test('watchDir reports a file made in the directory', async () => {
      await sbx.files.makeDir('/tmp/watched')
      const events = []
      const handle = await sbx.files.watchDir('/tmp/watched', (e) => {
        events.push(e)
      })
      try {
        await sbx.files.write('/tmp/watched/w.txt', 'watched')
        await eventually('an event for w.txt', () => events.some((e) => e.name === 'w.txt'))
        const types = new Set(events.filter((e) => e.name === 'w.txt').map((e) => e.type))
        assert.ok(types.has('create') || types.has('write'), `events: ${JSON.stringify(events)}`)
      } finally {
        await handle.stop()
      }
    })
  })

  test('getMetrics answers the current usage, a busy loop on the CPU', async () => {
    // The base template here has cpu "1" and memory 512Mi (e2b_test.go).
    const busy = await sbx.commands.run('while :; do :; done', { background: true })
    try {
      const metrics = await sbx.getMetrics()
      assert.equal(metrics.length, 1, `want one sample, got ${JSON.stringify(metrics)}`)
      const m = metrics[0]
      assert.ok(m.timestamp instanceof Date && Math.abs(Date.now() - m.timestamp.getTime()) < 60_000, `timestamp ${m.timestamp}`)
      assert.equal(m.cpuCount, 1)
      assert.ok(m.cpuUsedPct > 10 && m.cpuUsedPct <= 100, `cpuUsedPct ${m.cpuUsedPct} with a busy loop running`)
      assert.equal(m.memTotal, 512 * 1024 * 1024)
      assert.ok(m.memUsed > 0 && m.memUsed < m.memTotal, `memUsed ${m.memUsed} of ${m.memTotal}`)
      assert.ok(m.memCache >= 0 && m.diskUsed >= 0 && m.diskTotal === 0, JSON.stringify(m))
    } finally {
      await busy.kill()
    }
    // A window without now has no samples: no history is kept.
    const hourAgo = new Date(Date.now() - 3_600_000)
    assert.deepEqual(await sbx.getMetrics({ start: hourAgo, end: new Date(hourAgo.getTime() + 60_000) }), [])
  })

  test('Sandbox.connect reaches the same running sandbox', async () => {
    await sbx.files.write('/tmp/marker', runId)
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal(again.sandboxId, sbx.sandboxId)
    assert.equal((await again.commands.run('cat /tmp/marker')).stdout, runId)
  })
})

describe('sandboxes', { timeout: 180_000 }, () => {
  test('Sandbox.list finds the running sandboxes by metadata', async () => {
    const tag = randomBytes(4).toString('hex')
    const a = await create({ metadata: { tag } })
    const b = await create({ metadata: { tag } })
    const found = []
    const paginator = Sandbox.list({ query: { metadata: { tag } } })
    while (paginator.hasNext) {
      found.push(...(await paginator.nextItems()))
    }
    assert.deepEqual(found.map((s) => s.sandboxId).sort(), [a.sandboxId, b.sandboxId].sort())
    for (const s of found) {
      assert.equal(s.state, 'running')
      assert.equal(s.metadata.tag, tag)
    }
  })

  test('kill ends a sandbox; afterwards it is NotFound', async () => {
    const sbx = await create()
    const id = sbx.sandboxId
    assert.equal(await sbx.kill(), true)
    assert.equal(await sbx.isRunning(), false)
    assert.equal(await Sandbox.kill(id), false)
    await assert.rejects(Sandbox.connect(id), (e) => {
      assert.ok(e instanceof NotFoundError, `got ${e}`)
      return true
    })
    await assert.rejects(Sandbox.getInfo(id), (e) => {
      assert.ok(e instanceof NotFoundError, `got ${e}`)
      return true
    })
    await assert.rejects(sbx.commands.run('echo too late'))
    const listed = await Sandbox.list({ query: { metadata: { run: runId } } }).nextItems()
    assert.ok(!listed.some((s) => s.sandboxId === id), `${id} is still listed`)
  })

  test('setTimeout moves the end, and the sandbox ends when it passes', async () => {
    const sbx = await create({ timeoutMs: 300_000 })
    const before = await sbx.getInfo()
    assert.ok(before.endAt.getTime() > Date.now() + 200_000, `endAt ${before.endAt} is not ~5 minutes away`)
    await sbx.setTimeout(2_000)
    const after = await sbx.getInfo()
    assert.ok(after.endAt < before.endAt, `endAt ${after.endAt} did not move before ${before.endAt}`)
    await eventually('the sandbox to expire', async () => !(await sbx.isRunning()), 60_000)
    await eventually('the expired sandbox to be NotFound', async () => {
      try {
        await Sandbox.getInfo(sbx.sandboxId)
        return false
      } catch (e) {
        return e instanceof NotFoundError
      }
    })
  })

  test('a bad API key is refused with AuthenticationError', async () => {
    const apiKey = 'e2b_' + randomBytes(20).toString('hex')
    await assert.rejects(Sandbox.create({ apiKey }), AuthenticationError)
    await assert.rejects(Sandbox.list({ apiKey }).nextItems(), AuthenticationError)
  })
})
