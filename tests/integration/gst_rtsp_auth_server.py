"""gst_rtsp_server.py's stream behind a user name and password, as a camera's: GStreamer's RTSP server asks for
them (RTSP 401, Digest) and serves only that user. Run by Debian's python3, not the project's
virtualenv; see tests/integration/test_doctor.py (AuthRtspServer).

    CAMPUSGW_TEST_RTSP_LOGIN=user:password python3 gst_rtsp_auth_server.py PORT CODEC SOURCE [WxH] [FPS] [GOP]

The login comes through the environment, not the command line (which other users' `ps` shows).
"""

import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402
from gst_rtsp_server import launch  # noqa: E402  (the same directory: sys.path[0])

ROLE = "viewer"


def main() -> None:
    port, codec, source = sys.argv[1], sys.argv[2], sys.argv[3]
    width, height = (int(n) for n in (sys.argv[4] if len(sys.argv) > 4 else "640x360").split("x"))
    fps = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    gop = int(sys.argv[6]) if len(sys.argv) > 6 else fps
    user, password = os.environ["CAMPUSGW_TEST_RTSP_LOGIN"].split(":", 1)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
    auth.add_digest(user, password, token)
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)  # as cameras do by default: no password in clear
    server.set_auth(auth)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch(codec, source, width, height, fps, gop))
    factory.set_shared(True)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    permissions.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/sub", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print(server.get_bound_port(), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
