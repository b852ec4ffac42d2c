// Package fetch is the fetch engine between a mounted image's filesystem
// (package fs) and its blob backends: it turns "the data of this chunk"
// into backend range requests, and hands out only verified data.
//
// Entry points: [New] opens an [Engine] on an image's bootstrap (a
// [rafs.Reader]) and a [Backend], with a [ChunkCache] and the rest in
// [Options]. [Engine.Chunk] returns one chunk's data, from the cache or
// fetched; [Engine.Stream] fetches many chunks into the cache with a few
// large requests (see ExampleNew). What it guarantees and how:
//
//   - Verification before serve or cache: every chunk fetched from the
//     backend is checked against its digest and size before it is
//     returned or cached, and its bootstrap record is checked against
//     its blob's own chunk-info table (storage.ChunkReader.CheckRecord),
//     so a crafted bootstrap cannot write verified data into another
//     chunk's slot of a shared cache. Chunks read back from the cache
//     are verified too (the cache calls the check it is given): what
//     sits on the local disk may have changed since it was written. The
//     chunks verified last may be kept in memory (Options.Hot), so
//     a chunk split over several reads is checked once.
//   - Single flight per chunk: concurrent misses of a chunk share one
//     fetch, which is detached from the reader that started it (it ends
//     when the engine is closed, the backend's timeouts bound it), and a
//     chunk already on its way in another chunk's amplified span or in
//     a stream is waited for, not requested again.
//   - Amplification: with Options.Amplify, a miss also fetches the
//     following uncached chunks stored right after it, in the same
//     range request (upstream nydusd's amplify_io); a batch chunk brings
//     the rest of its batch.
//   - Streaming: Stream groups chunks into segments of a blob read with
//     one request each, several ranges per request where the backend
//     takes multi-range GETs (storage.MultiRangeReader), and serves each
//     chunk as soon as its stored unit has arrived.
//   - Priorities: requests of the urgent kinds (Demand, Dependency,
//     Sibling, HotSet) go to the backend at once; background ones
//     (ReadAhead, Prefetch, WholeFile) wait while an urgent one is in
//     flight. WithKind sets the kind of the fetches made under a context.
//   - Accounting: Metrics, an optional bounded log of backend fetches
//     with their kind, file and bytes (Options.LogSize, Engine.Log), log
//     lines (Options.Logger) and Events for failures.
//
// Every error Chunk returns wraps ErrIO.
package fetch
