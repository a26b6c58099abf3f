/**
 * What every panel shares: the event stream, who is signed in, and whether the server
 * extension answers.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { api } from './api';
import { ServerEvents } from './events';
import { IIdentity, IServerVersion } from './tokens';
import { serverProblem } from './view';

/** The state the sidebar's panels and main-area views share. */
export class LabrunContext {
  /**
   * @param events The server's event stream.
   * @param openRun Opens a run's detail view in the main area.
   * @param compareRuns Opens the comparison of runs in the main area.
   * @param openReport Opens a report's rendered HTML in the main area.
   * @param openNotebook Saves a notebook the API serves (an executed notebook, a report's
   *   notebook) into the workspace under `fileName` and opens it in JupyterLab.
   */
  constructor(
    readonly events: ServerEvents,
    readonly openRun: (id: number) => void,
    readonly compareRuns: (ids: number[]) => void,
    readonly openReport: (id: number, name: string) => void,
    readonly openNotebook: (apiPath: string, fileName: string) => void
  ) {}

  /** Why the server cannot be used, with the fix; null while it can. */
  get problem(): string | null {
    return this._problem;
  }

  /** The signed-in user, once known. */
  get identity(): IIdentity {
    return this._identity;
  }

  /** Emitted when `problem` or `identity` change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Ask the server for its version and who we are; sets `problem` when that fails. */
  async check(): Promise<boolean> {
    let version: IServerVersion | null = null;
    let error: unknown = null;
    try {
      version = await api.version();
    } catch (e) {
      error = e;
    }
    this._problem = serverProblem(version, error);
    if (!this._problem) {
      try {
        this._identity = await api.me();
      } catch (e) {
        this._problem = serverProblem(null, e);
      }
    }
    this._changed.emit();
    return this._problem === null;
  }

  private _problem: string | null = null;
  private _identity: IIdentity = { user: '', admin: false, roles: [], leads: [] };
  private _changed = new Signal<this, void>(this);
}
