// How a test script hands its result to pytest (tests/support/node.py): one JSON line
// on stdout, taken as it is now (what the script closes after this call does not
// change it), then exit once it is written. Node writes to a pipe asynchronously, and
// process.exit() right after console.log cut a large result at the pipe's 64 KiB.
export function report(result) {
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
}
