import { createInterface, type Interface } from 'node:readline';
import { CLIError } from './errors.js';
import type { Output } from './output.js';

/**
 * Questions to the operator, read line by line from stdin. One reader serves every question of a
 * run: a reader per question would lose lines already buffered by the previous one.
 */
export class Prompter {
  private rl: Interface | null = null;
  private readonly queue: string[] = [];
  private waiting: ((line: string | null) => void) | null = null;
  private ended = false;

  constructor(
    private readonly out: Output,
    private readonly options: { yes: boolean },
  ) {}

  /** True when a question can be asked: a terminal is attached. */
  get interactive(): boolean {
    return this.out.io.isTTY;
  }

  private reader(): void {
    if (this.rl) return;
    this.rl = createInterface({ input: this.out.io.stdin, terminal: false, crlfDelay: Infinity });
    this.rl.on('line', (line) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w(line);
      } else this.queue.push(line);
    });
    this.rl.on('close', () => {
      this.ended = true;
      this.waiting?.(null);
      this.waiting = null;
    });
  }

  /** Writes `question` to stderr and reads one line; null at end of input. */
  async ask(question: string): Promise<string | null> {
    this.out.io.stderr.write(question);
    this.reader();
    const queued = this.queue.shift();
    if (queued !== undefined) return queued;
    if (this.ended) return null;
    const line = await new Promise<string | null>((resolve) => {
      this.waiting = resolve;
    });
    // Ctrl-D leaves the cursor after the question.
    if (line === null) this.out.io.stderr.write('\n');
    return line;
  }

  private refuseWithoutTerminal(action: string): void {
    if (!this.interactive) {
      throw new CLIError('E_CONFIRM_REQUIRED', `refusing to ${action} without confirmation: run in a terminal or pass --yes`);
    }
  }

  /**
   * A y/N question. `--yes` answers it; without a terminal and without `--yes` it refuses (exit 2)
   * rather than wait. Anything but y/yes cancels (exit 2, nothing changed).
   */
  async confirm(question: string, action: string): Promise<void> {
    if (this.options.yes) {
      this.out.say(`${question} [y/N] y (--yes)`);
      return;
    }
    this.refuseWithoutTerminal(action);
    const answer = await this.ask(`${question} [y/N] `);
    if (answer === null || !/^\s*y(es)?\s*$/i.test(answer)) throw cancelled();
  }

  /** Asks the operator to type exactly `YES` (case-sensitive, as the seed's clear script did). */
  async typeYes(question: string, action: string): Promise<void> {
    if (this.options.yes) {
      this.out.say(`${question} YES (--yes)`);
      return;
    }
    this.refuseWithoutTerminal(action);
    const answer = await this.ask(`${question} `);
    if (answer?.trim() !== 'YES') throw cancelled();
  }

  /** Asks the operator to type `expected` exactly (forget: the user id itself, so the wrong person is not erased by habit). */
  async typeExactly(question: string, expected: string, action: string): Promise<void> {
    if (this.options.yes) {
      this.out.say(`${question} ${expected} (--yes)`);
      return;
    }
    this.refuseWithoutTerminal(action);
    const answer = await this.ask(`${question} `);
    if (answer?.trim() !== expected) throw cancelled();
  }

  close(): void {
    this.rl?.close();
    this.rl = null;
  }
}

export function cancelled(): CLIError {
  return new CLIError('E_CANCELLED', 'cancelled; nothing was changed');
}
