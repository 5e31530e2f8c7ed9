"""The command line, ``assistant <verb>``: the parser, then one module per group of verbs.

    parser.py     the verb table, --help for every option, main() (user errors exit 2 without a traceback)
    variant.py    chat, render, info, variant, serve, export
    train.py      train, sweep, data check
    evaluate.py   eval, feedback
    models.py     models list, models install (the catalog of base models)
"""
