/**
 * A panel that keeps itself current: events from the server trigger a reload, and a poll
 * that backs off takes over while the event stream is down. A hidden panel does neither.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import { Debouncer, Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { Problem } from '../components/common';
import { LabrunContext } from '../context';
import { IServerEvent } from '../tokens';

/** The base of the Runs, Queues, GPUs and Reports panels and the main-area views. */
export abstract class LivePanel extends ReactWidget {
  constructor(protected readonly ctx: LabrunContext) {
    super();
    this._poll = new Poll({
      factory: () => this._reloadOrProblem(),
      frequency: { interval: 5000, backoff: true, max: 60000 },
      // The fallback only: nothing to do while hidden or while events arrive.
      standby: () => !this.isVisible || this.ctx.events.connected,
      auto: false
    });
    this._debouncer = new Debouncer(() => this._reloadOrProblem(), 250);
    ctx.events.received.connect(this._onEvent, this);
    ctx.events.connectionChanged.connect(this._onConnection, this);
    ctx.changed.connect(() => this.update(), this);
  }

  /** Whether an event from the server changes what this panel shows. */
  protected abstract wants(event: IServerEvent): boolean;

  /** Fetch what the panel shows and re-render. */
  protected abstract reload(): Promise<void>;

  /** The panel's content once the server is known to answer. */
  protected abstract renderContent(): JSX.Element;

  render(): JSX.Element {
    const problem = this.ctx.problem;
    return problem ? <Problem message={problem} /> : this.renderContent();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    this._debouncer.dispose();
    super.dispose();
  }

  /** Reload soon, coalescing bursts of events into one request. */
  protected scheduleReload(): void {
    void this._debouncer.invoke();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._start();
  }

  /**
   * A widget attached where it shows at once (the first tab of an empty main area, a tab
   * restored after a reload) gets no after-show: it starts here.
   */
  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this._start();
    }
  }

  private _start(): void {
    void this._reloadOrProblem();
    void this._poll.start();
  }

  private async _reloadOrProblem(): Promise<void> {
    if (this.ctx.problem && !(await this.ctx.check())) {
      return;
    }
    await this.reload();
  }

  private _onEvent(_: unknown, event: IServerEvent): void {
    if (event.type === 'overflow' || (this.isVisible && this.wants(event))) {
      this.scheduleReload();
    }
  }

  private _onConnection(_: unknown, connected: boolean): void {
    if (!connected) {
      void this._poll.refresh();
    } else if (this.isVisible) {
      // Catch up on what happened while the stream was down.
      this.scheduleReload();
    }
  }

  private _poll: Poll;
  private _debouncer: Debouncer;
}
