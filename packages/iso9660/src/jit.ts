// Imported first by the stack-mkiso bin (never by the library, whose importers own their process's V8 flags).
//
// A run of the bin is short: on 20,000 small files its hot functions are optimized by TurboFan once and then run
// for a few tens of milliseconds, so compiling them costs about as much as it saves. The flags are read when a
// function is optimized, which happens only once the walk is under way, so setting them here, before any of it,
// applies to every optimization of the run.
// - No inlining: each optimization takes a fraction of the compiler time, and the compiler threads take that
//   much less CPU from the main thread.
// - Nothing of more than 400 bytes of bytecode is optimized: the few large functions (the layout's primary
//   tree and records, sector allocation, the write loop) run once per directory or once in all, and spend their
//   time in the small functions they call, which are still optimized; compiling them took the compiler threads
//   about 25 ms. The limit was measured on the code as it is (whole process, 20,000 files: 400 and 550 gave
//   0.96-0.97x the CPU, 250 and 150 slowed the main thread); a large new loop may need it revisited.
import { setFlagsFromString } from "node:v8";

setFlagsFromString("--no-turbo-inlining");
setFlagsFromString("--max-optimized-bytecode-size=400");
