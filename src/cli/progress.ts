/**
 * A progress line for long work (`streams watch`, the simulator): on a terminal one
 * line redrawn in place, with a bar when the total is known; anywhere else (a pipe,
 * a log file, a test) plain lines, one per change, so nothing is lost to carriage
 * returns. Small on purpose: the libraries that do this pull in far more than a
 * bar and a line.
 */
export interface Progress {
  update(text: string, done?: number, total?: number): void;
  /** Prints `text` on its own line above the progress line, which is drawn again under it. */
  note(text: string): void;
  /** Ends the line (on a terminal) and prints `text` on its own line. */
  finish(text: string): void;
}

export const BAR_WIDTH = 24;

export function bar(done: number, total: number, width = BAR_WIDTH): string {
  const ratio = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const full = Math.round(ratio * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${String(Math.floor(ratio * 100)).padStart(3)}%`;
}

export function progress(out: NodeJS.WriteStream = process.stdout): Progress {
  const tty = out.isTTY === true;
  let last = '';
  return {
    update(text, done, total) {
      const line = done !== undefined && total !== undefined ? `${bar(done, total)} ${text}` : text;
      if (line === last) return;
      last = line;
      if (tty) out.write(`\r\x1b[2K${line}`);
      else out.write(`${line}\n`);
    },
    note(text) {
      if (tty) out.write(`\r\x1b[2K${text}\n${last}`);
      else out.write(`${text}\n`);
    },
    finish(text) {
      if (tty && last) out.write('\n');
      out.write(`${text}\n`);
      last = '';
    },
  };
}

/**
 * For a run that logs as it goes (the simulator, the benches): on a terminal a bar stays
 * under the `<prefix>: ` log lines; piped, the log lines alone (the bar's redraws would
 * only clutter a log file), and `update`/`finish` write nothing.
 */
export function barUnderLog(out: NodeJS.WriteStream, prefix: string) {
  const bar = out.isTTY ? progress(out) : undefined;
  const line = (text: string) => `${prefix}: ${text}`;
  return {
    log: (text: string) => (bar ? bar.note(line(text)) : out.write(`${line(text)}\n`)),
    update: (text: string, done: number, total: number) => bar?.update(text, done, total),
    finish: (text: string) => bar?.finish(line(text)),
  };
}
