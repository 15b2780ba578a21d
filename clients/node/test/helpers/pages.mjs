// A local test site on 127.0.0.1 (node:http): the browser-session site of the stack and a
// scripted API for the retry rules. Same routes as clients/python/tests/_pages.py:
//   GET /page            HTML showing the `sid` cookie; sets `visits` (one more than received)
//   ANY /once401/{key}   401 invalid_token for the first request of key, then 200
//   ANY /bare401/{key}   401 without a challenge for the first request of key, then 200
//   ANY /forbidden       always 403;  ANY /scope  always 401 insufficient_scope
//   ANY /echo            200 with method, body length, cookie and headers
// Every request is recorded in `hits` (path, method, authorization, body).
import { createServer } from "node:http";

function cookies(header) {
  const out = {};
  for (const part of (header ?? "").split(";")) {
    const at = part.indexOf("=");
    if (at > 0) out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return out;
}

export async function startPages() {
  const hits = [];
  const seen = new Set();
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const path = req.url.split("?")[0];
      hits.push({ method: req.method, path, authorization: req.headers.authorization, body: body.toString() });
      const json = (status, data, headers = {}) => {
        res.writeHead(status, { "content-type": "application/json", ...headers });
        res.end(JSON.stringify(data));
      };
      if (path === "/page") {
        const jar = cookies(req.headers.cookie);
        const visits = jar.visits ? Number(jar.visits) + 1 : 1;
        res.writeHead(200, { "content-type": "text/html", "set-cookie": `visits=${visits}; Path=/` });
        res.end(`<html><head><title>portal</title></head><body><p id="sid">${jar.sid ?? "none"}</p></body></html>`);
      } else if (path.startsWith("/once401/") || path.startsWith("/bare401/")) {
        const first = !seen.has(path);
        seen.add(path);
        if (first && path.startsWith("/once401/")) {
          json(401, { ok: false }, { "www-authenticate": 'Bearer realm="pages", error="invalid_token"' });
        } else if (first) {
          json(401, { ok: false });
        } else {
          json(200, { ok: true, body_len: body.length });
        }
      } else if (path === "/forbidden") {
        json(403, { ok: false }, { "www-authenticate": 'Bearer error="insufficient_scope"' });
      } else if (path === "/scope") {
        json(401, { ok: false }, { "www-authenticate": 'Bearer error="insufficient_scope", scope="admin"' });
      } else if (path === "/echo") {
        json(200, { method: req.method, body_len: body.length, cookie: req.headers.cookie ?? null, headers: req.headers });
      } else {
        json(404, { ok: false });
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    hits,
    hitsFor: (path) => hits.filter((hit) => hit.path === path),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}
