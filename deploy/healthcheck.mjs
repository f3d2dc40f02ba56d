// Container health check (docker-compose.yml): GET <url> on the container's own listener; healthy (exit 0)
// when it answers 200 and, with an expectation like nats.state=connected, its JSON body has that value.
// usage: node healthcheck.mjs <url> [<json.path>=<value>]
// https URLs are the edge's ACME directory behind its own (often self-signed) certificate: this is a
// liveness probe of the local listener, so the certificate is not verified here.
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';

const [url, expect] = process.argv.slice(2);
if (!url) {
  process.stderr.write('usage: node healthcheck.mjs <url> [<json.path>=<value>]\n');
  process.exit(2);
}
const unhealthy = (why) => {
  process.stderr.write(`${url}: ${why}\n`);
  process.exit(1);
};
const get = url.startsWith('https:') ? httpsGet : httpGet;
const req = get(url, { rejectUnauthorized: false, timeout: 3000 }, (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (d) => (body += d));
  res.on('end', () => {
    if (res.statusCode !== 200) unhealthy(`HTTP ${res.statusCode}`);
    if (expect) {
      const i = expect.indexOf('=');
      const path = expect.slice(0, i).split('.');
      const want = expect.slice(i + 1);
      let v;
      try {
        v = path.reduce((o, k) => (o == null ? undefined : o[k]), JSON.parse(body));
      } catch (e) {
        unhealthy(`not JSON (${e.message})`);
      }
      if (String(v) !== want) unhealthy(`${path.join('.')} is ${JSON.stringify(v)}, not ${JSON.stringify(want)}`);
    }
    process.exit(0);
  });
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (e) => unhealthy(e.message));
