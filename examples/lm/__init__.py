"""A byte-level transformer language model and its schedules at equal budget.

- :mod:`examples.lm.data`: the corpus (standard-library ``.py`` files, no
  download, split by file), token windows, bits per byte;
- :mod:`examples.lm.model`: ``make_model(ModelConfig(), seed)``,
  ``loss_fn(model, tokens)``, ``bits_per_byte(model, tokens)`` and
  ``make_optimizer(schedule)`` (clipped AdamW, decay on matrices only);
- :mod:`examples.lm.schedules`: the schedule families, concrete or traced;
- :mod:`examples.lm.config`: the trainer's run (``Config``) and its checks;
- :mod:`examples.lm.train`: the trainer (``python -m examples.lm.train``);
- :mod:`examples.lm.compare` and :mod:`examples.lm.report`: the comparison
  of ``docs/report_lm.md`` (``python -m examples.lm.compare``).

A task built on it (a benchmark, say) needs only the first two::

  from examples.lm import data, model
  corpus = data.load_corpus()
  net = model.make_model(model.ModelConfig(), seed=0)
  offsets = data.batch_offsets(len(corpus.train), 64, 16, seed=0,
                               steps=range(100))
  batches = data.windows(corpus.train, offsets, 64)     # [100, 16, 65]
  loss = model.loss_fn(net, batches[0])                  # nats per byte
  val = data.validation_windows(corpus, 64, 256)
  bpb = model.bits_per_byte(net, val)
"""
