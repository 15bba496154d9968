"""The job runner (compute node): train.py's entry (cli), the run of a pipeline of stages
(pipeline), what every stage shares (job: config, folder, tracker, device, data, model) and an
adaptive sweep's trial (trial), and a worker running many runs of a sweep in one allocation
(worker). Above the stages; the training engine is hypersal/train/."""
