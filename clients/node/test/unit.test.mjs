// Pure functions (no broker): WWW-Authenticate rules, problem mapping, proxy and identity
// options, the Cookie header, environment defaults, and no secret in any printout.
import assert from "node:assert/strict";
import { test } from "node:test";
import { inspect } from "node:util";

import * as ak from "../dist/index.js";

test("shouldRefresh", () => {
  const cases = [
    [401, ['Bearer realm="x", error="invalid_token", error_description="expired"'], true],
    [401, [], true],
    [401, ['Bearer realm="x"'], true],
    [401, ['Basic realm="x"'], true],
    [401, ['Bearer error="insufficient_scope", scope="admin"'], false],
    [401, ['Bearer error="invalid_request"'], false],
    [401, ["Basic realm=\"x\", Bearer error=insufficient_scope"], false],
    [401, ['DPoP error="invalid_token"'], true],
    [403, [], false],
    [403, ['Bearer error="invalid_token"'], false],
    [200, [], false],
  ];
  for (const [status, headers, expected] of cases) {
    assert.equal(ak.shouldRefresh(status, headers), expected, `${status} ${headers}`);
  }
});

test("parseChallenges", () => {
  const parsed = ak.parseChallenges('Basic realm="x", Bearer error=invalid_token, Negotiate abc123==');
  assert.deepEqual(parsed.map((c) => c.scheme), ["Basic", "Bearer", "Negotiate"]);
  assert.deepEqual(parsed[1].params, { error: "invalid_token" });
  assert.equal(parsed[2].token68, "abc123==");
  const escaped = ak.parseChallenges('Bearer error_description="say \\"hi\\"", ERROR="invalid_token"');
  assert.deepEqual(escaped[0].params, { error_description: 'say "hi"', error: "invalid_token" });
  assert.equal(ak.parseChallenges('Bearer error="unterminated')[0].params.error, "unterminated");
  assert.deepEqual(ak.parseChallenges(""), []);
});

const problem = (slug, status, extra = {}) =>
  JSON.stringify({ type: `urn:authkeeper:problem:${slug}`, title: slug, status, detail: "d", ...extra });

test("problem mapping", () => {
  const cases = [
    ["needs-reauth", 409, ak.NeedsReauth],
    ["unavailable", 503, ak.Unavailable],
    ["forbidden", 403, ak.Forbidden],
    ["unauthorized", 401, ak.Unauthorized],
    ["no-session-available", 503, ak.NoSessionAvailable],
    ["lease-lost", 409, ak.LeaseLost],
    ["unknown-lease", 404, ak.UnknownLease],
    ["invalid-request", 400, ak.InvalidRequest],
    ["configuration", 502, ak.BrokerError],
  ];
  for (const [slug, status, cls] of cases) {
    const error = ak.errorFromResponse(status, new Headers({ "retry-after": "7" }), problem(slug, status));
    assert.equal(error.constructor, cls, slug);
    assert.equal(error.name, cls.name);
    assert.equal(error.slug, slug);
    assert.equal(error.status, status);
  }
  const reauth = ak.errorFromResponse(409, new Headers(), problem("needs-reauth", 409, { login_hint: "authkeeper login crm", credential: "crm" }));
  assert.equal(reauth.loginHint, "authkeeper login crm");
  assert.equal(reauth.credential, "crm");
  assert.equal(ak.errorFromResponse(503, new Headers({ "retry-after": "7" }), problem("unavailable", 503)).retryAfter, 7);
  const plain = ak.errorFromResponse(502, new Headers(), "<html>proxy error cookie=abc</html>");
  assert.equal(plain.constructor, ak.BrokerError);
  assert.equal(plain.type, "about:blank");
  assert.ok(!plain.message.includes("cookie=abc"));
});

test("parseRetryAfter", () => {
  assert.equal(ak.parseRetryAfter("12"), 12);
  assert.equal(ak.parseRetryAfter(null), undefined);
  assert.equal(ak.parseRetryAfter("soon"), undefined);
  const later = ak.parseRetryAfter(new Date(Date.now() + 30_000).toUTCString());
  assert.ok(later > 25 && later <= 31);
});

test("proxy, identity and context options", () => {
  assert.equal(ak.proxySettings(undefined), undefined);
  assert.deepEqual(ak.proxySettings("http://10.0.0.5:3128"), { server: "http://10.0.0.5:3128" });
  assert.deepEqual(ak.proxySettings("socks5://us%40er:p%3Ass@proxy.example:1080"), {
    server: "socks5://proxy.example:1080",
    username: "us@er",
    password: "p:ss",
  });
  assert.equal(ak.proxySettings("http://u:p@[::1]:8080").server, "http://[::1]:8080");
  assert.deepEqual(ak.proxySettings("10.0.0.5:3128"), { server: "http://10.0.0.5:3128" });
  assert.deepEqual(ak.identityOptions({ userAgent: "UA", locale: "en-US", platform: "Linux", viewport: { width: 1, height: 2 } }), {
    userAgent: "UA",
    locale: "en-US",
    viewport: { width: 1, height: 2 },
  });
  assert.deepEqual(ak.contextOptions({ cookies: [], origins: [] }, "http://u:p@h:1", undefined), {
    proxy: { server: "http://h:1", username: "u", password: "p" },
    storageState: { cookies: [], origins: [] },
  });
});

test("cookieHeader follows RFC 6265 matching", () => {
  const cookie = (name, domain, path = "/", extra = {}) => ({
    name, value: `v-${name}`, domain, path, expires: -1, httpOnly: false, secure: false, sameSite: "Lax", ...extra,
  });
  const state = {
    cookies: [
      cookie("host", "example.com"),
      cookie("dom", ".example.com"),
      cookie("deep", "example.com", "/app"),
      cookie("sec", "example.com", "/", { secure: true }),
      cookie("old", "example.com", "/", { expires: 1 }),
      cookie("other", "other.org"),
    ],
    origins: [],
  };
  assert.equal(ak.cookieHeader(state, "http://example.com/app/x"), "deep=v-deep; host=v-host; dom=v-dom");
  assert.equal(ak.cookieHeader(state, "https://example.com/"), "host=v-host; dom=v-dom; sec=v-sec");
  assert.equal(ak.cookieHeader(state, "http://www.example.com/application"), "dom=v-dom");
  assert.equal(ak.cookieHeader(state, "http://notexample.com/"), "");
});

test("client defaults from the environment; no secret in printouts", () => {
  process.env.AUTHKEEPER_URL = "http://127.0.0.1:1/";
  process.env.AUTHKEEPER_API_KEY = "ak_KEY-SECRET";
  try {
    const client = new ak.Client();
    assert.equal(client.url, "http://127.0.0.1:1");
    assert.ok(!inspect(client, { showHidden: true }).includes("KEY-SECRET"));
    assert.ok(!JSON.stringify(client).includes("KEY-SECRET"));
    delete process.env.AUTHKEEPER_URL;
    assert.throws(() => new ak.Client(), /AUTHKEEPER_URL/);
  } finally {
    delete process.env.AUTHKEEPER_URL;
    delete process.env.AUTHKEEPER_API_KEY;
  }
  const token = new ak.Token({ access_token: "tok-SECRET", token_type: "Bearer", expires_at: "2030-01-01T00:00:00Z", generation: 3 });
  assert.ok(!inspect(token, { showHidden: true }).includes("tok-SECRET"));
  assert.ok(!JSON.stringify(token).includes("tok-SECRET"));
  assert.equal(token.authorization, "Bearer tok-SECRET");
  assert.equal(token.generation, 3);
});
