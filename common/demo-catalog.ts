/**
 * The demo catalog, seeded by inventory on first start (and known to the simulated supplier of
 * replenishment). Each SKU shows one path of the saga.
 */
export interface CatalogEntry {
  sku: string;
  name: string;
  onHand: number;
  reorderPoint: number;
  discontinued: boolean;
}

export const DEMO_CATALOG: readonly CatalogEntry[] = [
  {
    sku: 'WIDGET-1',
    name: 'Widget (plenty of stock)',
    onHand: 1_000_000,
    reorderPoint: 100,
    discontinued: false,
  },
  { sku: 'GADGET-2', name: 'Gadget', onHand: 500, reorderPoint: 50, discontinued: false },
  {
    sku: 'GIZMO-3',
    name: 'Gizmo (low stock: order more than 5 to see replenishment)',
    onHand: 5,
    reorderPoint: 10,
    discontinued: false,
  },
  {
    sku: 'LEGACY-4',
    name: 'Legacy part (discontinued: order more than 3 and replenishment fails)',
    onHand: 3,
    reorderPoint: 0,
    discontinued: true,
  },
];
