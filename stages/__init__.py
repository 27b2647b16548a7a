"""One module per DVC stage: read the declared params, call the library, write the outputs.

Each module has ``PARAMS`` (exactly the params keys dvc.yaml declares for the stage; the runner
hands the stage nothing else) and ``run(params)``. ``tandem <stage>`` and dvc.yaml run the same
code.
"""
