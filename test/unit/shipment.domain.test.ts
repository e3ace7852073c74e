import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS } from '../../common/config.ts';
import { shippingDecision, trackingNumber } from '../../services/shipment/domain.ts';

const SUPPORTED = CONFIG_KEYS.SUPPORTED_COUNTRIES.default.split(',');

describe('shipment rules: whether an order can ship', () => {
  it('ships to a supported country, with the carrier that serves it', () => {
    expect(shippingDecision('GB', SUPPORTED, false)).toEqual({ ship: true, carrier: 'Royal Mail' });
    expect(shippingDecision('US', SUPPORTED, false)).toEqual({ ship: true, carrier: 'UPS' });
    expect(shippingDecision('CA', SUPPORTED, false)).toEqual({ ship: true, carrier: 'UPS' });
  });

  it('a supported country without a dedicated carrier ships with the default one', () => {
    expect(shippingDecision('DE', SUPPORTED, false)).toEqual({ ship: true, carrier: 'DHL' });
  });

  it('refuses a country outside the supported list, naming it and saying UNSUPPORTED_COUNTRY', () => {
    const decision = shippingDecision('JP', SUPPORTED, false);

    expect(decision.ship).toBe(false);
    if (decision.ship) return;
    expect(decision.detail).toMatch(/^UNSUPPORTED_COUNTRY: /);
    expect(decision.detail).toContain('JP');
  });

  it('the supported list is the configured one, not a built-in one', () => {
    expect(shippingDecision('GB', ['FR'], false).ship).toBe(false);
    expect(shippingDecision('JP', ['JP'], false)).toEqual({ ship: true, carrier: 'DHL' });
  });

  it('an injected failure refuses even a supported country, with detail INJECTED', () => {
    expect(shippingDecision('GB', SUPPORTED, true)).toEqual({ ship: false, detail: 'INJECTED' });
  });
});

describe('shipment rules: tracking numbers', () => {
  it('is two upper-case letters of the carrier followed by ten digits', () => {
    for (const carrier of ['UPS', 'DHL', 'Royal Mail']) {
      expect(trackingNumber(carrier)).toMatch(/^[A-Z]{2}\d{10}$/);
    }
  });

  it('takes its prefix from the letters of the carrier name', () => {
    expect(trackingNumber('Royal Mail').slice(0, 2)).toBe('RO');
    expect(trackingNumber('UPS').slice(0, 2)).toBe('UP');
    expect(trackingNumber('d.h.l').slice(0, 2)).toBe('DH');
  });

  it('draws its ten digits from the random source', () => {
    const digits = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.999];
    let i = 0;

    const number = trackingNumber('UPS', () => digits[i++] ?? 0);

    expect(number).toBe('UP0123456789');
  });

  it('two tracking numbers are (overwhelmingly likely) different', () => {
    const numbers = new Set(Array.from({ length: 50 }, () => trackingNumber('DHL')));

    expect(numbers.size).toBeGreaterThan(45);
  });
});
