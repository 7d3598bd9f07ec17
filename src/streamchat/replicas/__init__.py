"""Serving on Ray Serve: the same app in N replicas, each with its own engine, behind Ray's proxy.

`options.py` maps settings onto Ray Serve's deployment options (no Ray import, so the CLI can
refuse a bad combination before it starts a cluster); `deployment.py` is the replica;
`app.py` builds the application for `serve run`; `launch.py` is `streamchat serve --replicas N`.
"""
