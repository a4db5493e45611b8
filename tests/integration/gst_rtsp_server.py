"""GStreamer's RTSP server (gst-rtsp-server, Debian's gir1.2-gst-rtsp-server-1.0), serving one H.264 or H.265
stream as an IP camera's substream does: the camera driver's tests meet an RTSP/RTP implementation we did
not write. Run by Debian's python3 (python3-gi), not the project's virtualenv; see gst_rtsp.py.

    python3 gst_rtsp_server.py PORT CODEC SOURCE [WIDTHxHEIGHT] [FPS] [GOP]

PORT 0 takes a free one; the bound port is printed on the first line of stdout. CODEC: h264 or h265.
SOURCE: `test` (videotestsrc) or the URL of an MJPEG stream (our camera simulator's scene, so a test can
cover the lens) that GStreamer decodes and encodes again. The media is shared by all clients, like a camera.
With CAMPUSGW_TEST_RTSP_LOGIN=user:password in the environment (not the command line, which `ps` shows), the
stream is served only to that user, asked for with RTSP 401 and Digest as cameras do (test_doctor.py).
"""

import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

ROLE = "viewer"

ENCODERS = {
    # zerolatency: no B-frames, as camera substreams; a key frame every GOP frames (cameras: 1-2 s).
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast bitrate=400 key-int-max={gop} ! rtph264pay",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast bitrate=400 key-int-max={gop} ! rtph265pay",
}


def launch(codec: str, source: str, width: int, height: int, fps: int, gop: int) -> str:
    if source == "test":
        src = "videotestsrc is-live=true pattern=ball"
    else:
        src = f"souphttpsrc location={source} is-live=true do-timestamp=true ! multipartdemux ! jpegdec"
    caps = f"video/x-raw,width={width},height={height},framerate={fps}/1"
    return (f"( {src} ! videoconvert ! videoscale ! videorate ! {caps} ! "
            f"{ENCODERS[codec].format(gop=gop)} name=pay0 pt=96 config-interval=1 )")


def require_login(server: GstRtspServer.RTSPServer, factory: GstRtspServer.RTSPMediaFactory, user: str,
                  password: str) -> None:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
    auth.add_digest(user, password, token)
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)  # as cameras do by default: no password in clear
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    permissions.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.set_permissions(permissions)


def main() -> None:
    port, codec, source = sys.argv[1], sys.argv[2], sys.argv[3]
    width, height = (int(n) for n in (sys.argv[4] if len(sys.argv) > 4 else "640x360").split("x"))
    fps = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    gop = int(sys.argv[6]) if len(sys.argv) > 6 else fps
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch(codec, source, width, height, fps, gop))
    factory.set_shared(True)
    login = os.environ.get("CAMPUSGW_TEST_RTSP_LOGIN")
    if login:
        require_login(server, factory, *login.split(":", 1))
    server.get_mount_points().add_factory("/sub", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print(server.get_bound_port(), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
