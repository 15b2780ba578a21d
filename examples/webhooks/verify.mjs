// Verify an authkeeper webhook delivery (see docs/reauth.md, "Webhook notices").
import { createHmac, timingSafeEqual } from "node:crypto";

/** True when the delivery is authentic (X-Authkeeper-Signature) and at most `tolerance` s old. */
export function verify(secret, signature, delivery, body, tolerance = 300) {
  const fields = Object.fromEntries(signature.split(",").map((part) => part.split("=", 2)));
  const t = fields.t ?? "";
  if (!/^\d+$/.test(t) || Math.abs(Date.now() / 1000 - Number(t)) > tolerance) return false;
  const expected = createHmac("sha256", secret).update(`${t}.${delivery}.`).update(body).digest();
  const given = Buffer.from(fields.v1 ?? "", "hex");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

// For the tests: headers in the environment, the body on stdin.
if (import.meta.url === `file://${process.argv[1]}`) {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const { AK_SECRET, AK_SIGNATURE, AK_DELIVERY } = process.env;
  process.exit(verify(AK_SECRET, AK_SIGNATURE, AK_DELIVERY, Buffer.concat(chunks)) ? 0 : 1);
}
