"""What `make dev` stands up besides the functions, as a developer meets it: ports chosen
through make, the local S3 keeping its objects across restarts, and ports that are never
silently replaced. Real processes and sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import boto3
import pytest

from devkit import ROOT, cfn, s3
from devkit import runner as rt
from devkit.runner.services import start_s3
from devkit.runner.settings import LOCAL_JWT_SECRET


def client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def time_wait_port() -> int:
    """A port whose last connection the server side closed first: it sits in TIME_WAIT,
    where a bind without SO_REUSEADDR fails (the quick-restart case)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT
    peer.recv(1)
    peer.close()
    server.close()
    return port


# --- ports through make ----------------------------------------------------------------------


@pytest.mark.parametrize(("args", "env"), [
    (["PORT=4000", "S3_PORT=4100"], {}),
    ([], {"PORT": "4000", "S3_PORT": "4100"}),
])
def test_make_dev_passes_the_ports(args: list[str], env: dict[str, str]) -> None:
    # When make dev is asked for ports (as arguments or from the environment), dry-run
    out = subprocess.run(["make", "-n", "dev", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env}, check=True).stdout
    # Then the runner gets them
    command = next(line for line in out.splitlines() if "scripts/dev.py" in line)
    assert command.split("scripts/dev.py", 1)[1].split() == ["--port", "4000", "--s3-port", "4100"]
    # And without them it gets none
    plain = subprocess.run(["make", "-n", "dev"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k not in ("PORT", "S3_PORT")},
                           check=True).stdout
    assert next(line for line in plain.splitlines() if "scripts/dev.py" in line).rstrip().endswith("dev.py")


def test_a_taken_port_is_an_error_that_names_the_make_variable() -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as refused:
            rt.Runner(cfn.TEMPLATE, env_file=None, port=port)
    message = str(refused.value)
    assert f"127.0.0.1:{port}" in message and "PORT=" in message and "make dev" in message
    suggested = int(message.split("PORT=", 1)[1].split()[0])
    assert s3.port_free(suggested) and s3.port_free(suggested + 1)


# --- the S3 port -----------------------------------------------------------------------------


def test_a_chosen_s3_port_in_use_is_an_error_never_replaced() -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as refused:
            start_s3(["local-uploads"], port, port_fixed=True, state_dir=None)
        assert f"127.0.0.1:{port}" in str(refused.value) and "S3_PORT=" in str(refused.value)
        # The default (the runner's port + 1) moves to a free port instead, and says so
        server, note = start_s3(["local-uploads"], port, port_fixed=False, state_dir=None)
        try:
            assert server.port != port and note == f"port {port} was in use"
        finally:
            server.stop()


def test_a_port_in_time_wait_is_reused_not_replaced() -> None:
    # Given S3's port in TIME_WAIT, as right after stopping make dev
    port = time_wait_port()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the old check did: it called the port taken
    # When make dev starts S3 there again, then it listens on that very port
    server, note = start_s3(["local-uploads"], port, port_fixed=True, state_dir=None)
    try:
        assert (server.port, note) == (port, "")
        assert "local-uploads" in [b["Name"] for b in client(server.endpoint).list_buckets()["Buckets"]]
    finally:
        server.stop()


# --- S3 state across restarts ----------------------------------------------------------------


def test_s3_objects_survive_a_restart_and_a_crash(tmp_path: Path) -> None:
    state = tmp_path / "s3"
    server = s3.start_server(None, state)
    try:
        s3.create_buckets(server.endpoint, ["local-uploads", "local-backups"])
        c = client(server.endpoint)
        c.put_object(Bucket="local-uploads", Key="users/u/uploads/a.jpg", Body=b"\xff\xd8photo",
                     ContentType="image/jpeg", Metadata={"owner": "u"})
        # a multipart upload (backups use them): completed, and one left open
        where = {"Bucket": "local-backups", "Key": "backups/b.jsonl.gz"}
        big = c.create_multipart_upload(**where)["UploadId"]
        part = c.upload_part(**where, UploadId=big, PartNumber=1, Body=b"x" * 1024)
        c.complete_multipart_upload(**where, UploadId=big,
                                    MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
        open_upload = c.create_multipart_upload(Bucket="local-backups", Key="backups/open")["UploadId"]
    finally:
        server.stop()

    # When S3 starts again on the same folder (another port: URLs are path-style)
    server = s3.start_server(None, state)
    try:
        c = client(server.endpoint)
        assert server.restored == 2
        photo = c.get_object(Bucket="local-uploads", Key="users/u/uploads/a.jpg")
        assert photo["Body"].read() == b"\xff\xd8photo"
        assert (photo["ContentType"], photo["Metadata"]) == ("image/jpeg", {"owner": "u"})
        assert c.get_object(Bucket="local-backups", Key="backups/b.jsonl.gz")["Body"].read() == b"x" * 1024
        uploads = c.list_multipart_uploads(Bucket="local-backups").get("Uploads", [])
        assert [u["UploadId"] for u in uploads] == [open_upload]
        # And a change is saved shortly after it is made, so a crash keeps it too
        c.delete_object(Bucket="local-uploads", Key="users/u/uploads/a.jpg")
        c.put_object(Bucket="local-uploads", Key="after-crash", Body=b"kept")
        time.sleep(2 * s3.SAVE_DELAY_S + 1)  # a save follows a change within SAVE_DELAY_S (+ scheduling)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
    finally:
        server.stop()

    server = s3.start_server(None, state)
    try:
        keys = [o["Key"] for o in client(server.endpoint).list_objects_v2(Bucket="local-uploads")["Contents"]]
        assert keys == ["after-crash"]
    finally:
        server.stop()


def test_one_s3_server_per_state_folder_and_an_unreadable_state_is_set_aside(tmp_path: Path) -> None:
    state = tmp_path / "s3"
    first = s3.start_server(None, state)
    try:
        with pytest.raises(RuntimeError, match="in use by another local S3 server"):
            s3.start_server(None, state)
    finally:
        first.stop()
    (state / s3.STATE_FILE).write_bytes(b"not a pickle")
    server = s3.start_server(None, state)
    try:
        assert server.restored == 0 and "could not load" in server.notes[0]
        assert (state / "s3-state.unreadable").read_bytes() == b"not a pickle"
    finally:
        server.stop()


def test_the_s3_server_stops_when_its_parent_dies(tmp_path: Path) -> None:
    # Given a parent process that started S3 and was killed without stopping it
    code = ("from devkit import s3; import sys, time; s = s3.start_server(None, None); "
            "print(s.proc.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([str(ROOT / ".venv/bin/python"), "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())  # type: ignore[union-attr]
    parent.kill()
    parent.wait()
    parent.stdout.close()  # type: ignore[union-attr]
    # Then the S3 server exits too (its port is not held by an orphan)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat") as stat:
            if stat.read().split()[2] == "Z":
                return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the S3 server outlived its parent")


# --- scripts/token ---------------------------------------------------------------------------


def test_scripts_token_signs_with_the_secret_the_runner_gives_the_functions(tmp_path: Path) -> None:
    import jwt

    def token(*args: str, **env: str) -> dict:
        shell = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET", "JWT_ISSUER", "JWT_AUDIENCE")}
        out = subprocess.run([str(ROOT / "scripts" / "token"), *args], env={**shell, **env}, cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        return jwt.decode(out, options={"verify_signature": False}) | {"_token": out}

    # Nothing configured: the runner's local secret (never a random one)
    claims = token("--env-file", "none")
    jwt.decode(claims["_token"], LOCAL_JWT_SECRET, algorithms=["HS256"])
    # env.local.json's JWT_SECRET (a rotated list: the first value signs) and template parameters
    env_file = tmp_path / "env.local.json"
    env_file.write_text('{"Parameters": {"JWT_SECRET": "from-the-env-file-0123456789abcdef,old-one"}, '
                        '"TemplateParameters": {"JwtIssuer": "https://issuer.example"}}')
    claims = token("--env-file", str(env_file), "00000000-0000-4000-8000-000000000001")
    decoded = jwt.decode(claims["_token"], "from-the-env-file-0123456789abcdef", algorithms=["HS256"],
                         issuer="https://issuer.example")
    assert decoded["sub"] == "00000000-0000-4000-8000-000000000001"
    # The shell's JWT_SECRET over the local one, as for the runner (env.local.json over both)
    claims = token("--env-file", "none", JWT_SECRET="from-the-shell-0123456789abcdef-x")
    jwt.decode(claims["_token"], "from-the-shell-0123456789abcdef-x", algorithms=["HS256"])


# --- the embedded Postgres -------------------------------------------------------------------


def test_the_embedded_postgres_is_used_without_an_xdg_runtime_dir_warning(tmp_path: Path) -> None:
    # Given a shell without XDG_RUNTIME_DIR (root in a container, CI, ssh) and Python's
    # default warning filters, when what start and --stop-postgres use is loaded (a
    # folder of its own: the developer's or the suite's server must keep running)
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = ("from pathlib import Path; from devkit import postgres; postgres._embedded_postgres(); "
            f"print(postgres.stop_embedded(Path({str(tmp_path)!r})))")
    done = subprocess.run([str(ROOT / ".venv/bin/python"), "-W", "default", "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    # Then nothing is printed but the answer (not running)
    assert (done.stderr, done.stdout.strip()) == ("", "False")
