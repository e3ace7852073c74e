/** Replenishment's rules, without I/O: how much to buy, and what the simulated supplier answers. */
import { DEMO_CATALOG } from '../../common/demo-catalog.ts';

/** A low-stock restock brings the SKU back to twice its reorder point. */
export function restockQuantity(low: { available: number; reorderPoint: number }): number {
  return Math.max(1, low.reorderPoint * 2 - low.available);
}

export type SupplierAnswer = { delivered: true } | { delivered: false; detail: string };

/** The supplier delivers everything but discontinued SKUs; an injected failure fails anything. */
export function supplierAnswer(sku: string, injectedFailure: boolean): SupplierAnswer {
  if (injectedFailure) return { delivered: false, detail: 'INJECTED' };
  const entry = DEMO_CATALOG.find((e) => e.sku === sku);
  if (!entry) return { delivered: false, detail: `the supplier does not carry ${sku}` };
  if (entry.discontinued) return { delivered: false, detail: `${sku} is discontinued` };
  return { delivered: true };
}
