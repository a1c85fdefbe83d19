// A real OpenID Connect provider for the single sign-on tests: npm's certified `oidc-provider`
// (installed by `make browser` into .venv/oidc), with its own sign-in pages (dev interactions),
// test accounts and their groups. Started by tests/e2e/oidc.py:
//   OIDC_PROVIDER_DIR=.venv/oidc/node_modules OIDC_TEST_CONFIG='{...}' node oidc_provider.mjs
// One knob for the tests that must show a bad ID token refused through the whole flow:
//   POST /__test/forge?mode=expired|other_issuer  — the next token answer carries an ID token with
//   the provider's own claims and key, but expired, or naming another issuer.
import http from "node:http";
import crypto from "node:crypto";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.env.OIDC_PROVIDER_DIR;
const load = (name, file) => import(pathToFileURL(path.join(modules, name, file)).href);
const { default: Provider } = await load("oidc-provider", "lib/index.js");
const jose = await load("jose", "dist/webapi/index.js");

const cfg = JSON.parse(process.env.OIDC_TEST_CONFIG);
const issuer = `http://127.0.0.1:${cfg.port}`;
const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: "test-key-1", use: "sig", alg: "RS256" };

const provider = new Provider(issuer, {
  clients: [{
    client_id: cfg.client.client_id,
    client_secret: cfg.client.client_secret,
    redirect_uris: cfg.client.redirect_uris,
    post_logout_redirect_uris: cfg.client.post_logout_redirect_uris,
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString("hex")] },
  scopes: ["openid", "email", "profile", "groups"],
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"], groups: ["groups"] },
  conformIdTokenClaims: false, // the scope's claims go into the ID token itself (groups included)
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  async findAccount(_ctx, id) {
    const account = cfg.accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: account.email, email_verified: true, name: id, groups: account.groups };
      },
    };
  },
  // A first-party client: the user is not asked to consent to what it asks for.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope("openid email profile groups");
    await grant.save();
    return grant;
  },
});

let forge = null;
provider.use(async (ctx, next) => {
  await next();
  if (forge && ctx.method === "POST" && ctx.path === "/token" && ctx.status === 200 && ctx.body?.id_token) {
    const claims = jose.decodeJwt(ctx.body.id_token);
    const now = Math.floor(Date.now() / 1000);
    if (forge === "expired") Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
    if (forge === "other_issuer") claims.iss = `http://127.0.0.1:${cfg.port + 1}`;
    const key = await jose.importJWK(jwk, "RS256");
    ctx.body = { ...ctx.body, id_token: await new jose.SignJWT(claims).setProtectedHeader({ alg: "RS256", kid: jwk.kid }).sign(key) };
    forge = null;
  }
});

const callback = provider.callback();
http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === "/__test/forge" && req.method === "POST") {
    forge = url.searchParams.get("mode");
    res.end("ok");
    return;
  }
  callback(req, res);
}).listen(cfg.port, "127.0.0.1", () => console.log(`oidc-provider listening on ${issuer}`));
