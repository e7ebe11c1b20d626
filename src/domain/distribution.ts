/**
 * The split of a distribution stream's tick among its members, by weight, in whole
 * units. Pure and exact (BigInt inside), shared by the billing transaction and the
 * property test.
 *
 * Each member first gets floor(amount × weight / W) (W: the sum of the weights). The
 * units left over (fewer than the members) go one each to the members owed most:
 * every member carries a `credit`, what it was owed minus what it was paid since the
 * membership last changed, in units of 1/W. A tick adds each member's fractional
 * share to its credit; a member given a leftover unit gives W back. Ties go by a
 * rotation over the tick number, so equal members take turns.
 *
 * So: the parts sum to the amount; each part is the exact share rounded down, or one unit more;
 * and a member's total never drifts from its exact share (the credits sum to zero;
 * the property test bounds each below two units). When the membership changes the
 * credits restart at zero.
 */
export interface Member {
  key: string;
  weight: number;
  credit: number;
}

export interface Part {
  key: string;
  part: number;
  credit: number;
}

export function distributeTick(amount: number, members: readonly Member[], tick: number): Part[] {
  const n = members.length;
  if (n === 0) return [];
  const a = BigInt(amount);
  const total = members.reduce((s, m) => s + BigInt(m.weight), 0n);
  const parts = members.map((m) => (a * BigInt(m.weight)) / total);
  const credits = members.map((m, i) => BigInt(m.credit) + ((a * BigInt(m.weight)) % total));
  const leftover = Number(a - parts.reduce((s, p) => s + p, 0n));
  const turn = (i: number) => (((i - tick) % n) + n) % n;
  const order = members
    .map((_, i) => i)
    .sort((x, y) => (credits[y]! > credits[x]! ? 1 : credits[y]! < credits[x]! ? -1 : turn(x) - turn(y)));
  for (const i of order.slice(0, leftover)) {
    parts[i]! += 1n;
    credits[i]! -= total;
  }
  return members.map((m, i) => ({ key: m.key, part: Number(parts[i]), credit: Number(credits[i]) }));
}
