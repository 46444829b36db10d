// A TCP proxy on a free loopback port that plays the load balancer in tests: it
// forwards to one hub, can drop every connection, refuse new ones for a while, and
// send the next ones to another hub.
import net from "node:net";

export async function balancer(targetPort = null) {
  const state = { target: targetPort, paused: false };
  const open = new Set();
  const server = net.createServer((client) => {
    if (state.paused || !state.target) return client.destroy();
    const upstream = net.connect(state.target, "127.0.0.1");
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      a.pipe(b);
      a.on("error", () => b.destroy());
      a.on("close", () => b.destroy());
    }
    open.add(client); open.add(upstream);
    client.on("close", () => { open.delete(client); open.delete(upstream); });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    to(port) { state.target = port; },
    pause() { state.paused = true; },
    resume() { state.paused = false; },
    drop() { for (const s of open) s.destroy(); },
    close() { server.close(); for (const s of open) s.destroy(); },
  };
}
