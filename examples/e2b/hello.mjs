// Hello, Fast Sandbox, through E2B's official JavaScript SDK, unchanged:
// create a sandbox, run a command, write and read back a file, kill it.
//
//	make up && source .fsb/env   # exports E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY
//	cd examples/e2b && npm ci && node hello.mjs
import { Sandbox } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
  if (!process.env[name]) {
    // Without the URLs the SDK would go to E2B's cloud instead.
    console.error(`${name} is not set: run \`make up\` and \`source .fsb/env\` first`)
    process.exit(2)
  }
}

const sandbox = await Sandbox.create()
console.log(`sandbox ${sandbox.sandboxId} created`)
try {
  const result = await sandbox.commands.run('echo hi')
  console.log(`echo hi -> ${JSON.stringify(result.stdout)} (exit code ${result.exitCode})`)
  if (result.stdout.trim() !== 'hi') {
    throw new Error(`expected "hi", got ${JSON.stringify(result.stdout)}`)
  }

  const text = `written at ${new Date().toISOString()}\n`
  await sandbox.files.write('hello.txt', text)
  const back = await sandbox.files.read('hello.txt')
  console.log(`hello.txt -> ${JSON.stringify(back)}`)
  if (back !== text) {
    throw new Error(`read back ${JSON.stringify(back)}, wrote ${JSON.stringify(text)}`)
  }
} finally {
  await sandbox.kill()
  console.log(`sandbox ${sandbox.sandboxId} killed`)
}
console.log('ok')
