// Types of the operations service's client: /client/operations.js, and the npm package.

export type State = "pending" | "completed" | "rejected";

/** An operation, as GET /operations/{id} answers it and Socket.IO pushes it. */
export interface OperationRecord {
  id: string;
  userId: string | null;
  name: string;
  state: State;
  code: string | null;
  reason: string | null;
  version: number;
  createdAt: string;
  updatedAt: string;
  /** Pushed records only: the change feed's position just after this change. */
  cursor?: string;
  [field: string]: unknown;
}

export interface Page {
  items: OperationRecord[];
  next: string | null;
}

interface ConnectBase {
  /** The service's base URL; the page's origin by default. */
  url?: string;
}

/** A token, getToken, or both (the token is then the first one): connect() throws with neither. */
export type ConnectOptions = ConnectBase &
  (
    | {
        /** A token (JWT). */
        token: string;
        /** Called when the service refuses the token, and before its exp. */
        getToken?: () => Promise<string>;
      }
    | {
        token?: string;
        /** Called for a token at first, when the service refuses one, and before one's exp. */
        getToken: () => Promise<string>;
      }
  );

export interface StartOptions {
  /** Sent as the Idempotency-Key header: the same key starts one saga however often sent. */
  idempotencyKey?: string;
  /** Prefer: wait=N (seconds, up to 60): the answer may then hold the final record already. */
  wait?: number;
}

export interface ListQuery {
  state?: State;
  name?: string;
  limit?: number;
  cursor?: string;
}

export type Status = "connecting" | "open" | "reconnecting" | "closed";

/** Pushed to admins when a running saga waits longer than its step's objective. */
export interface SagaOverdue {
  saga: string;
  id: string;
  operationId: string;
  step: string;
  waitingSince: string;
  overdueSince: string;
}

/** Pushed to admins when a saga is no longer overdue (its step arrived, or it finished). */
export interface SagaOverdueCleared {
  saga: string;
  id: string;
  operationId: string;
  step: string;
}

/** One operation's changes, in rising versions, none twice, ending with the terminal one. */
export interface OperationHandle extends AsyncIterable<OperationRecord> {
  readonly id: string;
  /** The terminal record (completed or rejected). */
  result(): Promise<OperationRecord>;
  /** Stops following: iterations end, and a waiting result() is rejected. A `for await` left
   * early (break) closes the handle too, unless another loop or a result() still waits on it. */
  close(): void;
}

export interface OperationsClient {
  readonly url: string;
  readonly status: Status;
  /** The last change-feed cursor received (kept in sessionStorage when there is one). */
  readonly cursor: string | null;
  watch(id: string): OperationHandle;
  start(sagaName: string, body: Record<string, unknown>, options?: StartOptions): Promise<OperationHandle>;
  cancel(id: string, reason?: string): Promise<{ operationId: string; cancelled: boolean }>;
  get(id: string): Promise<OperationRecord>;
  list(query?: ListQuery): Promise<Page>;
  /** Another route of the service (such as /sagas or /operations/{id}/history), with the token
   * and the same renewal and typed errors: its JSON answer, or null when it has none. */
  request(method: string, path: string, body?: unknown): Promise<any>;
  on(event: "change", fn: (record: OperationRecord) => void): () => void;
  /** `code` names why the service refused the socket ("unauthorized", "too_many_sockets"), else null. */
  on(event: "status", fn: (status: Status, code: string | null) => void): () => void;
  /** Admins only (the ops room): a saga became overdue, or no longer is. */
  on(event: "saga_overdue", fn: (event: SagaOverdue) => void): () => void;
  on(event: "saga_overdue_cleared", fn: (event: SagaOverdueCleared) => void): () => void;
  close(): void;
}

/** A refusal: the HTTP status and the service's {code, reason}. */
export declare class OperationsError extends Error {
  readonly status: number;
  readonly code: string;
  readonly reason: string;
}

export declare function connect(options: ConnectOptions): OperationsClient;
