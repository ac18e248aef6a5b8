/**
 * The client's address as the per-IP limits count it. Behind `trustedHops` reverse proxies
 * that each append the address they received from to X-Forwarded-For, the client is that
 * many hops back from the peer; entries further left were written by the client itself
 * (forgeable) and are never used. With 0 hops the header is ignored.
 */
export function clientIp(peer: string | undefined, forwardedFor: string | string[] | undefined, trustedHops: number): string {
  const chain = [...(Array.isArray(forwardedFor) ? forwardedFor.join(',') : (forwardedFor ?? '')).split(','), peer ?? '']
    .map((a) => a.trim())
    .filter(Boolean);
  // Right to left: the peer, then what each trusted proxy saw.
  const ip = trustedHops > 0 ? (chain[chain.length - 1 - trustedHops] ?? chain[0]) : peer;
  return normalize(ip ?? 'unknown');
}

/** `::ffff:127.0.0.1` and `127.0.0.1` are one client. */
function normalize(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}
