"""Official weights by name, against a loopback HTTP server (127.0.0.1) serving generated checkpoints under the
official file names (``VISATTN_WEIGHTS_MIRROR``): download, cache hit, an interrupted download (nothing partial
left, a retry works), a wrong digest refused with the file kept for inspection, a 404, offline mode, two processes
fetching at once (one download), ``visattn weights`` and ``visattn train --pretrained NAME``. Never the internet."""

import http.server
import io
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_config

import visattn
from visattn import hub
from visattn.app.cli import main


class Server:
    """Serves ``files`` (name -> bytes); ``truncate`` names a file whose next response stops halfway."""

    def __init__(self):
        self.files, self.requests, self.truncate = {}, [], set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if name in server.truncate:
                    server.truncate.discard(name)
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server(tmp_path, monkeypatch):
    s = Server()
    monkeypatch.setenv("VISATTN_WEIGHTS_MIRROR", s.url)
    monkeypatch.setenv("VISATTN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VISATTN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield s
    s.close()


def checkpoint_bytes(name: str) -> tuple[bytes, dict]:
    torch.manual_seed(1)
    state = visattn.create_model(name, **tiny_config(name)).state_dict()
    buf = io.BytesIO()
    torch.save({"model": state, "epoch": 300}, buf)  # wrapped as the official training scripts save it
    return buf.getvalue(), state


def test_download_then_cache_hit(server):
    data, state = checkpoint_bytes("litv2_s")
    server.files["litv2_s.pth"] = data
    model = visattn.create_model("litv2_s", pretrained=True, **tiny_config("litv2_s"))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert hub.cached("litv2_s").read_bytes() == data
    visattn.create_model("litv2_s", pretrained=True, **tiny_config("litv2_s"))  # from the cache
    assert server.requests == ["litv2_s.pth"]
    assert not list(hub.cache_dir().glob("*.partial"))


def test_an_interrupted_download_leaves_nothing_and_a_retry_works(server):
    data, _ = checkpoint_bytes("volo_d1")
    server.files["d1_224_84.2.pth.tar"] = data
    server.truncate.add("d1_224_84.2.pth.tar")
    with pytest.raises(ValueError, match="could not download .*nothing was kept"):
        hub.fetch("volo_d1", progress=False)
    assert [p.name for p in hub.cache_dir().iterdir() if not p.name.endswith(".lock")] == []
    assert hub.fetch("volo_d1", progress=False).read_bytes() == data


def test_a_wrong_digest_is_refused_and_the_file_kept(server, monkeypatch):
    data, _ = checkpoint_bytes("litv2_m")
    server.files["litv2_m.pth"] = data
    monkeypatch.setitem(hub.WEIGHTS, "litv2_m", replace(hub.WEIGHTS["litv2_m"], sha256="0" * 64))
    with pytest.raises(ValueError, match="does not match the published one .*SHA-256.*kept for inspection"):
        hub.fetch("litv2_m", progress=False)
    assert (hub.cache_dir() / "litv2_m.pth.rejected").read_bytes() == data
    assert hub.cached("litv2_m") is None
    import hashlib

    good = hashlib.sha256(data).hexdigest()  # the right digest (and size) pass
    monkeypatch.setitem(hub.WEIGHTS, "litv2_m", replace(hub.WEIGHTS["litv2_m"], sha256=good, size=len(data)))
    assert hub.fetch("litv2_m", progress=False).read_bytes() == data


def test_a_missing_file_is_a_clear_404(server):
    with pytest.raises(ValueError, match=r"answered HTTP 404.*download it by hand"):
        hub.fetch("litv2_b", progress=False)


def test_offline_fails_fast_naming_the_file(server, monkeypatch):
    monkeypatch.setenv("VISATTN_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"litv2_s.pth is not in the cache .*place litv2_s.pth .* in"):
        hub.fetch("litv2_s")
    assert server.requests == []
    monkeypatch.delenv("VISATTN_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # respected too
    with pytest.raises(FileNotFoundError, match="downloads are off"):
        hub.fetch("litv2_s")
    data, _ = checkpoint_bytes("litv2_s")
    hub.cache_dir().mkdir(parents=True, exist_ok=True)
    (hub.cache_dir() / "litv2_s.pth").write_bytes(data)  # placed by hand: used offline
    assert hub.fetch("litv2_s") == hub.cache_dir() / "litv2_s.pth"


def test_two_processes_fetching_at_once_download_once(server, tmp_path):
    data, _ = checkpoint_bytes("volo_d2")
    server.files["d2_224_85.2.pth.tar"] = data
    code = "from visattn import hub; print(hub.fetch('volo_d2', progress=False))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {Path(o.strip()) for o, _ in outs} == {hub.cache_dir() / "d2_224_85.2.pth.tar"}
    assert server.requests.count("d2_224_85.2.pth.tar") == 1


def test_every_variant_has_a_location_or_a_reason():
    assert set(hub.WEIGHTS) == set(visattn.list_models())
    for name, w in hub.WEIGHTS.items():
        if w.url is not None:
            assert w.url.startswith("https://github.com/") and w.url.endswith(w.file), name
        else:
            assert w.note and name in w.note, name
    with pytest.raises(ValueError, match="not published CloFormer checkpoints"):
        hub.fetch("cloformer_s")


def test_weights_command_lists_every_variant(server, capsys):
    data, _ = checkpoint_bytes("litv2_s")
    server.files["litv2_s.pth"] = data
    assert main(["weights", "--fetch", "litv2_s"]) == 0
    capsys.readouterr()
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in hub.WEIGHTS}
    assert set(lines) == set(visattn.list_models())
    assert " yes " in lines["litv2_s"] and " no " in lines["volo_d1"] and "by hand" in lines["dilateformer_tiny"]
    assert "not published" in lines["cloformer_xxs"] and "84.2" in lines["volo_d1"]


def test_train_fine_tunes_from_weights_named_by_variant(server, tmp_path):
    pytest.importorskip("sklearn")
    from visattn.app.train import TrainConfig, train

    data, state = checkpoint_bytes("litv2_s")
    server.files["litv2_s.pth"] = data
    cfg = TrainConfig(pretrained="litv2_s", overrides=dict(tiny_config("litv2_s")), epochs=1, batch_size=128,
                      lr=0.0, quiet=True, output=str(tmp_path / "run"))
    assert cfg.model_name() == "litv2_s" and cfg.model_overrides() == tiny_config("litv2_s")
    train(cfg)
    trained = visattn.load_checkpoint(tmp_path / "run" / "checkpoint.pt").model.state_dict()
    assert torch.equal(trained["patch_embed.proj.weight"], state["patch_embed.proj.weight"])  # lr 0: as fetched


def test_without_fcntl_the_import_works_and_the_lock_is_msvcrts(server, monkeypatch):
    """Windows has no fcntl: ``import visattn`` must not need it, and fetches lock with msvcrt (a stand-in here that
    refuses once, as LK_LOCK does after its ten tries, to show the wait goes on)."""
    code = "import sys; sys.modules['fcntl'] = None; import visattn; visattn.create_model('litv2_s'); print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-1500:]

    calls = []

    class FakeMsvcrt:
        LK_LOCK, LK_UNLCK = 1, 0

        @staticmethod
        def locking(fd, mode, nbytes):
            calls.append((mode, nbytes))
            if len(calls) == 1:
                raise OSError("deadlock avoided")

    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", FakeMsvcrt)
    data, _ = checkpoint_bytes("litv2_s")
    server.files["litv2_s.pth"] = data
    assert hub.fetch("litv2_s", progress=False).read_bytes() == data
    assert calls == [(1, 1), (1, 1), (0, 1)]  # refused, locked, unlocked
