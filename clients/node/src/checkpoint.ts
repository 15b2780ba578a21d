/**
 * A task's saved progress, sealed in the broker's store (`/v1/checkpoints/{task}`): a worker that
 * must stop (e.g. on {@link NeedsReauth}) saves, and the next one resumes.
 * @module
 */

import type { Client } from "./client.js";
import { MISSING } from "./client.js";
import { AuthkeeperError } from "./errors.js";

/** Where a save landed. */
export interface CheckpointSaved {
  task: string;
  /** Bumped by every save. */
  version: number;
  updated_at: string;
}

/** The task of `AUTHKEEPER_CHECKPOINT_URL` (`.../v1/checkpoints/{task}`), set by `authkeeper exec`. */
export function taskFromEnv(): string {
  const url = process.env["AUTHKEEPER_CHECKPOINT_URL"] ?? "";
  const marker = "/v1/checkpoints/";
  let path = "";
  try {
    path = new URL(url).pathname;
  } catch {
    path = "";
  }
  const at = path.lastIndexOf(marker);
  if (at < 0) {
    throw new AuthkeeperError("no checkpoint task: pass one, or run under `authkeeper exec` (AUTHKEEPER_CHECKPOINT_URL)");
  }
  return decodeURIComponent(path.slice(at + marker.length));
}

/**
 * The checkpoint of one task: any JSON document. A key may use the task named like its client,
 * tasks starting with its name and `.`, `-` or `_`, and those in its `checkpoints` list.
 */
export class Checkpoint<T = unknown> {
  constructor(
    private readonly client: Client,
    /** The task's name. */
    readonly task: string,
  ) {}

  #path(): string {
    return `/v1/checkpoints/${encodeURIComponent(this.task)}`;
  }

  /** The saved document, or `fallback` when nothing is saved. */
  async load(): Promise<T | undefined>;
  async load(fallback: T): Promise<T>;
  async load(fallback?: T): Promise<T | undefined> {
    const found = await this.client.call({ method: "GET", path: this.#path(), missingOk: true });
    return found === MISSING ? fallback : (found as T);
  }

  /** Replaces the saved document (at most the broker's `max_body`, 64 KiB by default). */
  async save(document: T): Promise<CheckpointSaved> {
    return (await this.client.call({ method: "PUT", path: this.#path(), body: document })) as CheckpointSaved;
  }

  /** Forgets the saved document (the task is done); false when nothing was saved. */
  async clear(): Promise<boolean> {
    return (await this.client.call({ method: "DELETE", path: this.#path(), missingOk: true })) !== MISSING;
  }
}
