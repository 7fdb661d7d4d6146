// Source addresses for benchmark clients: on Linux all of 127.0.0.0/8 is the loopback, so a
// client can connect from 127.0.N.1 and look like a client of another network. nginx's
// ip_hash keys on an IPv4 address's first three octets; from one address it would pin every
// client to one worker, which no deployment with real clients sees.
// sourceAddress(i, 0) is undefined: the system's choice (127.0.0.1).
exports.sourceAddress = (i, sources) => {
  if (!(sources >= 0 && sources <= 254)) throw new Error(`SOURCES must be 0 to 254, not ${sources}`);
  return sources > 0 ? `127.0.${1 + (i % sources)}.1` : undefined;
};
