"""Every guest operation has a deadline: an SSH server (real paramiko, on 127.0.0.1) that accepts a session
channel and then never answers its exec or subsystem request must not hang kpipe's GuestSession — paramiko itself
waits for that answer forever."""
from __future__ import annotations

import socket
import threading
import time

import paramiko
import pytest

from kpipe.guest import ssh as guest


class _Silent(paramiko.ServerInterface):
    """Accepts the client's key and its session channels; answers no exec or subsystem request."""

    def __init__(self, release: threading.Event):
        self.release = release

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        self.release.wait(60)        # the request is never answered while the test runs
        return False

    def check_channel_subsystem_request(self, channel, name):
        self.release.wait(60)
        return False


@pytest.fixture
def silent_sshd(tmp_path):
    host_key = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    if host_key is None:
        host_key = paramiko.RSAKey.generate(2048)
    client_key = paramiko.RSAKey.generate(2048)
    key_path = tmp_path / "id"
    client_key.write_private_key_file(str(key_path))
    release = threading.Event()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    transports: list[paramiko.Transport] = []

    def serve():
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            transports.append(t)
            t.add_server_key(host_key)
            t.start_server(server=_Silent(release))

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield port, key_path, (host_key.get_name(), host_key.get_base64())
    release.set()
    for t in transports:
        t.close()
    lsock.shutdown(socket.SHUT_RDWR)     # wakes the accept() (close alone leaves it waiting: th.join's 5 s)
    lsock.close()
    th.join(5)
    assert not th.is_alive()


def test_exec_and_sftp_requests_the_guest_never_answers_are_bounded(silent_sshd, monkeypatch):
    monkeypatch.setattr(guest, "REQUEST_TIMEOUT", 0.5)
    port, key_path, host_pub = silent_sshd
    for op, what in ((lambda s: s.run(["true"], timeout=30), "'true'"),
                     (lambda s: s.put(key_path, "/tmp/x"), "the SFTP subsystem")):
        s = guest.GuestSession("127.0.0.1", port, key_path, host_pub)    # a connection of its own
        s.connect(deadline=time.monotonic() + 20)
        try:
            t0 = time.monotonic()
            with pytest.raises(guest.RequestTimeout, match=f"for {what} but did not answer its request within 0.5 s"):
                op(s)
            assert time.monotonic() - t0 < 8          # not the command's 30 s, and never forever
        finally:
            s.close()
