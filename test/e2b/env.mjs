// The connection every script here uses: E2B's SDK reads E2B_API_URL,
// E2B_SANDBOX_URL and E2B_API_KEY from the environment by itself. Without
// the two URLs it would talk to E2B's cloud, so this refuses to go on
// unless both point at this machine's loopback: a misconfigured run fails
// here, before the SDK makes a request.

const loopback = new Set(['127.0.0.1', 'localhost', '[::1]'])

/** checkEnv throws unless the SDK is pointed at a Fast Sandbox on loopback. */
export function checkEnv() {
  for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL']) {
    const value = process.env[name]
    if (!value) {
      throw new Error(`${name} is not set: source .fsb/env after \`make up\` (or run the Go test in test/e2b)`)
    }
    const url = new URL(value)
    if (!loopback.has(url.hostname)) {
      throw new Error(`${name}=${value} is not on this machine's loopback: refusing to run against it`)
    }
  }
  if (!process.env.E2B_API_KEY) {
    throw new Error('E2B_API_KEY is not set: source .fsb/env after `make up`')
  }
}
