"""``expertseg annotate``: the annotation page, served on this machine.

The library does the work (:mod:`experts.annotation`): this command loads the model and the
dataset, checks everything before it listens, prints the page's address (with its session token)
and serves until Ctrl-C.
"""

from __future__ import annotations

import click

__all__ = ["annotate", "prepare"]


def prepare(*, model: str, data: str, expert: str, out: str | None = None, learn_steps: int = 60, device: str = "cpu"):
    """The checked :class:`~experts.annotation.service.AnnotationService` (nothing is written)."""
    from experts.annotation.service import AnnotationService
    from experts.data.locations import check_output_location
    from pipelines.runtime.models import load_model

    if out is not None:
        check_output_location(out, what="--out (where learned models are saved)")
    bundle = load_model(model, device=device)
    return AnnotationService(bundle, data, expert, learn_steps=learn_steps, out=out, device=device)


def annotate(*, model: str, data: str, expert: str, host: str = "127.0.0.1", port: int = 8765, out: str | None = None, learn_steps: int = 60, device: str = "cpu") -> None:
    """Serve the page until interrupted."""
    from experts.annotation.server import make_server, page_url

    service = prepare(model=model, data=data, expert=expert, out=out, learn_steps=learn_steps, device=device)
    server = make_server(service, host=host, port=port)
    states = service.store.states()
    click.echo(f"annotating {service.store.root} as {expert}: {len(states)} case(s), {sum(s == 'saved' for s in states.values())} saved; labels go to labelsTr/{expert}/, the log to annotations/{expert}/")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: anyone who can reach it and knows the address can annotate", err=True)
    click.echo(f"open {page_url(server, service.token)}   (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
        if out is not None:
            click.echo(f"learned models (if any): {out}/model")
