"""One module per DVC stage: read the declared params, call the library, write the outputs.

Each module has ``PARAMS`` (exactly the params keys dvc.yaml declares for the stage; the runner
hands the stage nothing else) and ``run(params)``. ``tandem <stage>`` and dvc.yaml run the same
code. A stage that can train data-parallel also has ``processes(params)``: when it says more than
one, the runner starts the stage under torchrun with that many processes.
"""
