/** Shipment's rules, without I/O: whether and how an order can ship. */

export type ShippingDecision = { ship: true; carrier: string } | { ship: false; detail: string };

const CARRIERS: Record<string, string> = { US: 'UPS', CA: 'UPS', GB: 'Royal Mail' };

export function shippingDecision(
  country: string,
  supported: readonly string[],
  injectedFailure: boolean,
): ShippingDecision {
  if (injectedFailure) return { ship: false, detail: 'INJECTED' };
  if (!supported.includes(country)) {
    return {
      ship: false,
      detail: `UNSUPPORTED_COUNTRY: ${country} is not served (served: ${supported.join(', ')})`,
    };
  }
  return { ship: true, carrier: CARRIERS[country] ?? 'DHL' };
}

/** A carrier-style tracking number: two letters of the carrier, ten digits from `random`. */
export function trackingNumber(carrier: string, random: () => number = Math.random): string {
  const prefix = carrier
    .replace(/[^A-Za-z]/g, '')
    .slice(0, 2)
    .toUpperCase();
  const digits = Array.from({ length: 10 }, () => Math.floor(random() * 10)).join('');
  return `${prefix}${digits}`;
}
