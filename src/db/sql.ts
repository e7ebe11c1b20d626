/**
 * SQL composed by name. A statement, or a fragment of one that another file
 * completes, is written with the `sql` tag; the values it takes are named
 * parameters (`params({ ref, tick })`), and it may interpolate other fragments. The
 * numbers ($1, $2, …) are given once, when `compile` turns the whole statement into
 * text and values, in the order the parameters first appear in the text. So a
 * fragment never knows which numbers its values get, and two fragments written in
 * different places cannot collide or drift apart the way "number your parameters
 * from $15" did.
 *
 * A parameter interpolated twice is one number (parameters are told apart by
 * identity, never by value: two equal values stay two parameters). The text depends
 * only on the statement's shape, never on the values, so a compiled statement can
 * run as a named (prepared) statement. Only fragments and parameters can be
 * interpolated: a string is a type error, so a value cannot end up spliced into
 * the text.
 */
/** A value bound as one parameter (made by params()). */
export class Param {
  constructor(readonly value: unknown) {}
}

/** Text with fragments and parameters in it (made by the sql tag). */
export class Sql {
  constructor(
    readonly strings: readonly string[],
    readonly parts: readonly (Sql | Param)[],
  ) {}
}

/** A statement or a fragment of one; it interpolates fragments and parameters only. */
export function sql(strings: TemplateStringsArray, ...parts: (Sql | Param)[]): Sql {
  for (const part of parts) {
    if (!(part instanceof Sql) && !(part instanceof Param)) throw new TypeError(`sql: interpolate a fragment or a parameter (params()), not ${typeof part} ${String(part)}`);
  }
  return new Sql([...strings], parts);
}

/** Named values as parameters: each one a single parameter wherever it is interpolated. */
export function params<T extends Record<string, unknown>>(values: T): { readonly [K in keyof T]: Param } {
  return Object.fromEntries(Object.entries(values).map(([name, value]) => [name, new Param(value)])) as { [K in keyof T]: Param };
}

/** The statement as node-postgres takes it: the text with $1.. in order of first appearance, and the values in that order. */
export function compile(statement: Sql): { text: string; values: unknown[] } {
  const numbers = new Map<Param, number>();
  const values: unknown[] = [];
  const textOf = (fragment: Sql): string =>
    fragment.parts.reduce<string>((text, part, i) => {
      if (part instanceof Sql) return text + textOf(part) + fragment.strings[i + 1];
      let n = numbers.get(part);
      if (n === undefined) {
        n = values.push(part.value);
        numbers.set(part, n);
      }
      return `${text}$${n}${fragment.strings[i + 1]}`;
    }, fragment.strings[0]!);
  return { text: textOf(statement), values };
}
