"""An IP camera on 127.0.0.1 for tests: an RTSP server (RFC 2326) that sends its video inside the
RTSP connection (interleaved RTP over TCP, section 10.12), as cameras do for clients behind NAT or
a firewall. FFmpeg encodes the video in real time, looped, with camera-like short GOPs, and packs
it into RTP (its ``rtp`` muxer, to a UDP port here); the server hands every packet to each playing
client. Clients asking for RTP over UDP get 461 Unsupported Transport and retry over TCP, as
FFmpeg's RTSP client does."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def _sdp(ffmpeg_sdp: str) -> str:
    """FFmpeg's SDP for its UDP destination, made a server's: no port, a control URL per track."""
    lines = []
    for line in ffmpeg_sdp.splitlines():
        if line.startswith("m=video"):
            fields = line.split()
            fields[1] = "0"
            lines += [" ".join(fields), "a=control:trackID=0"]
        elif line.startswith("c="):
            lines.append("c=IN IP4 0.0.0.0")
        elif line:
            lines.append(line)
    return "\r\n".join(lines) + "\r\n"


class _Camera:
    def __init__(self, sdp: str, rtp: socket.socket) -> None:
        self.sdp, self.rtp = sdp, rtp
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.playing: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.sessions = 0

    def forward(self) -> None:
        while not self.stopped.is_set():
            try:
                packet = self.rtp.recv(65536)
            except OSError:
                return
            frame = b"$\x00" + len(packet).to_bytes(2, "big") + packet
            with self.lock:
                for client in list(self.playing):
                    try:
                        client.sendall(frame)
                    except OSError:
                        self.playing.remove(client)

    def accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn: socket.socket) -> None:
        buf = b""
        with closing(conn):
            while not self.stopped.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                while buf:
                    if buf[:1] == b"$":  # the client's RTCP, interleaved: skip it
                        if len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[2:4], "big"):
                            break
                        buf = buf[4 + int.from_bytes(buf[2:4], "big"):]
                        continue
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head = buf[:end].decode("latin-1").split("\r\n")
                    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
                    body_len = int(headers.get("content-length", "0"))
                    if len(buf) < end + 4 + body_len:
                        break
                    buf = buf[end + 4 + body_len:]
                    self.answer(conn, head[0].split()[0], headers)
            with self.lock, suppress(ValueError):
                self.playing.remove(conn)

    def answer(self, conn: socket.socket, method: str, headers: dict[str, str]) -> None:
        base = f"rtsp://127.0.0.1:{self.port}/cam/"
        status, extra, body = "200 OK", [], ""
        if method == "OPTIONS":
            extra = ["Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"]
        elif method == "DESCRIBE":
            extra, body = ["Content-Type: application/sdp", f"Content-Base: {base}"], self.sdp
        elif method == "SETUP":
            if "TCP" not in headers.get("transport", "").upper():
                status = "461 Unsupported Transport"
            else:
                self.sessions += 1
                extra = ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", f"Session: {1000 + self.sessions};timeout=60"]
        elif method == "PLAY":
            extra = [f"Session: {headers.get('session', '1')}"]
        reply = [f"RTSP/1.0 {status}", f"CSeq: {headers.get('cseq', '0')}", *extra, f"Content-Length: {len(body)}"]
        with self.lock:
            conn.sendall(("\r\n".join(reply) + "\r\n\r\n" + body).encode("latin-1"))
            if method == "PLAY":
                self.playing.append(conn)
            if method == "TEARDOWN":
                with suppress(ValueError):
                    self.playing.remove(conn)

    def close(self) -> None:
        self.stopped.set()
        for s in (self.server, self.rtp):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept() or recv()
            s.close()
        with self.lock:
            for client in self.playing:
                with suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
            self.playing.clear()


@contextmanager
def rtsp_camera(ffmpeg: str, src: Path, workdir: Path) -> Iterator[str]:
    """``src`` looped as a live camera; yields its rtsp:// URL. Leaving the block unplugs it."""
    rtp, rtcp = _udp(), _udp()
    sdp_file = workdir / "camera.sdp"
    proc = subprocess.Popen(
        [ffmpeg, "-v", "error", "-re", "-stream_loop", "-1", "-i", str(src), "-an", "-c:v", "libx264", "-preset",
         "ultrafast", "-tune", "zerolatency", "-g", "10", "-f", "rtp", "-sdp_file", str(sdp_file),
         f"rtp://127.0.0.1:{rtp.getsockname()[1]}?rtcpport={rtcp.getsockname()[1]}&pkt_size=1400"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (sdp_file.exists() and "m=video" in sdp_file.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("ffmpeg did not start the camera's RTP stream")
        time.sleep(0.05)
    camera = _Camera(_sdp(sdp_file.read_text()), rtp)
    threads = [threading.Thread(target=camera.forward, daemon=True), threading.Thread(target=camera.accept, daemon=True)]
    for t in threads:
        t.start()
    try:
        yield f"rtsp://127.0.0.1:{camera.port}/cam"
    finally:
        camera.close()
        rtcp.close()
        proc.kill()
        proc.wait()
        for t in threads:
            t.join(5)
