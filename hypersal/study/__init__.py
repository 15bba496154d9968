"""The few-shot study: does a hypernetwork learn a new saliency task from k pairs better than
fine-tuning? `protocol` says which tasks a fold trains, tunes and tests on (no torch);
`arms` holds the ways of getting a model from k pairs; the stage `fewshot_study`
(hypersal/stages/study.py) runs them; `report` turns a sweep of them into RESULTS.md's tables
and plots.
"""
