// A real OpenID Connect provider (panva/oidc-provider) on loopback, for authkeeper's tests.
//
//   node server.mjs [PORT]        PORT from argv, else env PORT, else 0 (pick a free one)
//
// Prints exactly one line to stdout once listening:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}
// and logs provider events (grant.error, server_error, grant.revoked, ...) to stderr as JSON lines.
//
// Environment:
//   ACCESS_TTL                access token lifetime in seconds (default 5)
//   REFRESH_TTL               refresh token lifetime in seconds (default 3600)
//   OIDC_PROVIDER_WATCH_STDIN "0" disables exiting when stdin closes (default: exit on EOF, so a
//                             dead parent never leaves an orphan node process behind)
//
// It exits on SIGTERM, SIGINT and (by default) when stdin closes.

import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

function intFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number.parseInt(raw, 10);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function log(event, fields) {
  process.stderr.write(`${JSON.stringify({ ts: new Date().toISOString(), event, ...fields })}\n`);
}

function errorFields(error) {
  if (!error) return {};
  return {
    error: error.name,
    message: error.message,
    error_description: error.error_description,
    error_detail: error.error_detail,
  };
}

const port = process.argv[2] !== undefined
  ? Number.parseInt(process.argv[2], 10)
  : intFromEnv('PORT', 0);
const accessTtl = intFromEnv('ACCESS_TTL', 5);
const refreshTtl = intFromEnv('REFRESH_TTL', 3600);

// Shutdown paths: SIGTERM/SIGINT from whoever started us, EOF on stdin when the parent dies.
let shuttingDown = false;
function shutdown(reason) {
  if (shuttingDown) return;
  shuttingDown = true;
  log('shutdown', { reason });
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (process.env.OIDC_PROVIDER_WATCH_STDIN !== '0') {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

// A fresh signing key per run (instead of the library's warned-about development keys).
// EC P-256 / ES256: generated in microseconds, where RSA-2048 takes 60-300 ms.
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'ES256', kid: 'test-es256' };

const server = createServer();
server.listen(port, '127.0.0.1', () => {
  const actualPort = server.address().port;
  const issuer = `http://127.0.0.1:${actualPort}`;

  const configuration = {
    clients: [
      {
        client_id: 'authkeeper-test',
        client_secret: 'authkeeper-test-secret',
        // native: loopback redirect URIs match on any port (RFC 8252 §7.3), so a login helper
        // can listen on an ephemeral port with redirect_uri http://127.0.0.1:<port>/callback.
        application_type: 'native',
        grant_types: [
          'authorization_code',
          'refresh_token',
          'client_credentials',
          'urn:ietf:params:oauth:grant-type:device_code',
        ],
        response_types: ['code'],
        redirect_uris: [
          'http://127.0.0.1/callback',
          'http://localhost/callback',
          'http://[::1]/callback',
        ],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'ES256',
        scope: 'openid offline_access api',
      },
    ],
    scopes: ['openid', 'offline_access', 'api'],
    claims: { openid: ['sub'] },
    async findAccount(_ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub };
        },
      };
    },
    jwks: { keys: [signingKey] },
    enabledJWA: { idTokenSigningAlgValues: ['ES256'], userinfoSigningAlgValues: ['ES256'] },
    cookies: { keys: ['authkeeper-test-cookie-key-not-secret'] },
    // The default 15 s also stretches opaque access-token expiry at /me.
    clockTolerance: 0,
    ttl: {
      AccessToken: accessTtl,
      AuthorizationCode: 60,
      ClientCredentials: accessTtl,
      RefreshToken: refreshTtl,
      Grant: refreshTtl,
      Session: 3600,
      Interaction: 600,
      DeviceCode: 600,
      IdToken: 3600,
    },
    rotateRefreshToken: true,
    issueRefreshToken(_ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    expiresWithSession() {
      return false;
    },
    // PKCE (S256) is required for public clients; this confidential client may use it (and the
    // test helper does), but the default does not force it.
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      clientCredentials: { enabled: true },
    },
  };

  const provider = new Provider(issuer, configuration);

  for (const event of [
    'grant.error',
    'server_error',
    'authorization.error',
    'userinfo.error',
    'introspection.error',
    'revocation.error',
  ]) {
    provider.on(event, (ctx, error) => {
      const fields = { path: ctx?.path, client_id: ctx?.oidc?.client?.clientId, ...errorFields(error) };
      if (event === 'server_error') fields.stack = error?.stack;
      log(event, fields);
    });
  }
  provider.on('grant.revoked', (_ctx, grantId) => log('grant.revoked', { grantId }));
  // Model events get the model only (no ctx).
  provider.on('refresh_token.consumed', (token) => log('refresh_token.consumed', { grantId: token?.grantId }));

  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer, port: actualPort })}\n`);
});

server.on('error', (error) => {
  log('listen.error', errorFields(error));
  process.exit(1);
});
