"""Analysis: router interpretability, figures, reports and the quickstart pipeline.

- :mod:`moepot.analysis.routing`: routing records, usage matrices, entropy, dataset classifier;
- :mod:`moepot.analysis.figures`: PNG figures (matplotlib, the optional extra ``analysis``);
- :mod:`moepot.analysis.report`: Markdown + self-contained HTML reports;
- :mod:`moepot.analysis.sections`: report sections shared by ``route`` and ``quickstart``;
- :mod:`moepot.analysis.quickstart`: ``moepot quickstart``; :mod:`moepot.analysis.cli`: the commands.
"""
