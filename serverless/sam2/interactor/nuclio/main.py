"""Nuclio entry point of the SAM2 interactor for CVAT's AI Tools (see the repository's README)."""

from tracker.cvat.lambda_protocol import nuclio_glue


def init_context(context):
    nuclio_glue.init(context, nuclio_glue.interactor_service)


def handler(context, event):
    return nuclio_glue.handle(context, event)
