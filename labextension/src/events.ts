/**
 * The server's event stream (`/labrun/api/v1/events`), shared by every panel.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { API_PATH } from './api';
import { IServerEvent } from './tokens';

/**
 * One WebSocket to the server, reconnected with backoff while it is down. Panels listen to
 * `received`, and poll only while `connected` is false.
 */
export class ServerEvents implements IDisposable {
  constructor(private readonly settings = ServerConnection.makeSettings()) {
    this._open();
  }

  /** Every message the server sends. */
  get received(): ISignal<this, IServerEvent> {
    return this._received;
  }

  /** Emitted when the stream connects or drops. */
  get connectionChanged(): ISignal<this, boolean> {
    return this._connectionChanged;
  }

  /** Whether the stream is up; while it is not, panels poll. */
  get connected(): boolean {
    return this._connected;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    window.clearTimeout(this._retry);
    this._socket?.close();
    Signal.clearData(this);
  }

  private _open(): void {
    let url = URLExt.join(this.settings.wsUrl, API_PATH, 'events');
    if (this.settings.appendToken && this.settings.token) {
      url += `?token=${encodeURIComponent(this.settings.token)}`;
    }
    const socket = new this.settings.WebSocket(url);
    this._socket = socket;
    socket.onopen = () => {
      this._delay = 1000;
      this._setConnected(true);
    };
    socket.onmessage = (message: MessageEvent) => {
      try {
        this._received.emit(JSON.parse(String(message.data)) as IServerEvent);
      } catch (error) {
        console.warn('labrun: ignoring a malformed event', error);
      }
    };
    socket.onclose = () => {
      this._setConnected(false);
      if (!this._disposed) {
        // Back off up to a minute so a stopped server is not hammered.
        this._retry = window.setTimeout(() => this._open(), this._delay);
        this._delay = Math.min(this._delay * 2, 60000);
      }
    };
  }

  private _setConnected(connected: boolean): void {
    if (connected !== this._connected) {
      this._connected = connected;
      this._connectionChanged.emit(connected);
    }
  }

  private _socket: WebSocket | null = null;
  private _connected = false;
  private _disposed = false;
  private _delay = 1000;
  private _retry = 0;
  private _received = new Signal<this, IServerEvent>(this);
  private _connectionChanged = new Signal<this, boolean>(this);
}
