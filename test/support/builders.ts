/** Fixture builders: `anOrder({ items: [aLine('GIZMO-3', 8)] })`. */
import type { components } from '../../common/generated/api.ts';

type CreateOrder = components['schemas']['CreateOrderRequest'];
type Address = components['schemas']['ShippingAddress'];

export const anAddress = (overrides: Partial<Address> = {}): Address => ({
  name: 'Ada Lovelace',
  line1: '12 St James Square',
  city: 'London',
  postalCode: 'SW1Y 4JH',
  country: 'GB',
  ...overrides,
});

export const aLine = (sku = 'WIDGET-1', quantity = 1) => ({ sku, quantity });

export const anOrder = (overrides: Partial<CreateOrder> = {}): CreateOrder => ({
  customerId: 'customer-42',
  items: [aLine()],
  shippingAddress: anAddress(),
  ...overrides,
});
