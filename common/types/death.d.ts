declare module 'death' {
  type Listener = (signal: string, error?: unknown) => void;
  interface Options {
    uncaughtException?: boolean;
    SIGINT?: boolean;
    SIGTERM?: boolean;
    SIGQUIT?: boolean;
    debug?: boolean;
  }
  /** Calls the listener on the configured signals; returns a function removing it. */
  function death(options?: Options): (listener: Listener) => () => void;
  export default death;
}
