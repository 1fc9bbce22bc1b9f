"""bifrost-stt: a speech-to-text gateway serving the Bifrost transcription API from its OpenAPI document.

Layers, bottom to top (arrows only point down; ``.importlinter`` checks them in CI)::

    kernel      canonical types, the error tree, settings and secrets, audio sniffing, provider capabilities
    providers   one module per vendor behind one registry; imports the kernel only
    gateway     rooms: contract, config, routing, render, jobs; ``compose`` wires them into one ``Gateway``
    handlers    one function per operationId: HTTP in -> canonical request -> gateway -> HTTP out
    server      the app factory and the CLI

``providers/``, ``handlers/`` and ``openapi/`` live at the repository root and are mapped into this package.
"""
