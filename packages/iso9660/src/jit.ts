// Imported first by the stack-mkiso bin (never by the library, whose importers own their process's V8 flags).
//
// A run of the bin is short: on 20,000 small files its hot functions are optimized by TurboFan once and then run
// for a few tens of milliseconds. Without inlining each optimization takes a fraction of the compiler time, and
// the compiler threads take that much less CPU from the main thread. The flag is read when a function is
// optimized, which happens only once the walk is under way, so setting it here, before any of it, applies to
// every optimization of the run.
import { setFlagsFromString } from "node:v8";

setFlagsFromString("--no-turbo-inlining");
