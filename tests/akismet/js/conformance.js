// Drives Bouncer's Akismet-compatible API with the unmodified npm `akismet-api` client and prints what it saw as
// JSON; tests/akismet/test_akismet_clients.py starts the server, runs this script and checks the database.
//
// Input (environment): AKISMET_TEST = {"host": "localhost:PORT", "key": "...", "badKey": "...", "blog": "...",
// "cases": {name: comment}}. The client puts the key in the Host name (KEY.localhost:PORT); *.localhost is
// loopback (RFC 6761) but not every resolver knows it, so this harness resolves it to 127.0.0.1 itself.
'use strict'

const dns = require('dns')
const { AkismetClient } = require('akismet-api')

const systemLookup = dns.lookup
dns.lookup = function lookup(hostname, options, callback) {
  if (typeof options === 'function') {
    callback = options
    options = {}
  }
  if (hostname === 'localhost' || String(hostname).endsWith('.localhost')) {
    const all = typeof options === 'object' && options !== null && options.all
    return process.nextTick(() =>
      all ? callback(null, [{ address: '127.0.0.1', family: 4 }]) : callback(null, '127.0.0.1', 4)
    )
  }
  return systemLookup.call(dns, hostname, options, callback)
}

async function main() {
  const config = JSON.parse(process.env.AKISMET_TEST)
  const options = { host: config.host, protocol: 'http', blog: config.blog, lang: 'en', charset: 'UTF-8' }
  const client = new AkismetClient({ ...options, key: config.key })
  const stranger = new AkismetClient({ ...options, key: config.badKey })

  const results = {
    verifyValid: await client.verifyKey(),
    verifyInvalid: await stranger.verifyKey(),
    checks: {},
    submitSpam: null,
    submitHam: null,
    badKeyCheck: null
  }
  for (const [name, comment] of Object.entries(config.cases)) {
    results.checks[name] = await client.checkSpam(comment)
  }
  results.submitSpam = (await client.submitSpam(config.submitSpam)).text
  results.submitHam = (await client.submitHam(config.submitHam)).text
  try {
    await stranger.checkSpam(config.cases[Object.keys(config.cases)[0]])
    results.badKeyCheck = 'accepted'
  } catch (err) {
    results.badKeyCheck = err.message
  }
  process.stdout.write(JSON.stringify(results))
}

main().catch(err => {
  process.stderr.write(`${err.stack || err}\n`)
  process.exit(1)
})
