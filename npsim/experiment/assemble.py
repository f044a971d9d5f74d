"""From a validated config to the pieces a run needs: data, network, rule and optimizer.

Settings that are each valid but cannot work together (BP on step units, a
batch larger than the data, a monitor on a non-temporal layer) are refused
here with :class:`~npsim.errors.IncompatibleSettings`, naming the keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import Backend, get_backend
from ..errors import IncompatibleSettings
from ..io.data import DATASETS, Dataset, canonical_name, load_dataset
from ..learn.optim import OPTIMIZER_SETTINGS, cosine_decay, make_optimizer
from ..learn.rules import Decorrelate
from ..learn.rules import split_name as split_rule_name
from ..model.catalog import make_node
from ..model.layers import Conv2D, Dense
from ..model.losses import make_loss
from ..model.brian2_substrate import Brian2Substrate
from ..model.network import Network, param_key
from ..model.substrate import SubstrateNetwork
from .config import Config, rule_from_config
from .resources import check_memory, estimate_memory

__all__ = ["Experiment", "build", "build_network", "with_substrate"]


@dataclass
class Experiment:
    """Everything a config builds: the pieces the loop needs."""

    config: Config
    backend: Backend
    data: Dataset
    net: Network
    rule: object
    optimizer: object
    x_train: object = None
    y_train: object = None
    x_test: object = None
    y_test: object = None

    def initial_state(self):
        """(initial parameters, training random stream) of a run of the config from its seed: what
        ``npsim train`` starts from (the seed's first child draws the weights, the second the training noise,
        the third the parameters the rule adds: block-local losses' heads)."""
        init_seed, train_seed, rule_seed = np.random.SeedSequence(self.config.seed).spawn(3)
        params = self.net.init(self.backend.stream(init_seed), self.backend, scheme=self.config.network.init)
        params.update(self.rule.init_params(self.net, self.backend.stream(rule_seed), self.backend))
        return params, self.backend.stream(train_seed)

    @property
    def frozen(self) -> tuple[str, ...]:
        """Parameter keys ``train.freeze`` keeps at their initial values (W, b and R of those layers)."""
        return tuple(param_key(i, n) for i in self.config.train.freeze for n in ("W", "b", "R"))


def build_network(cfg: Config, n_in: int, n_out: int) -> Network:
    """The network ``cfg`` describes, for data of ``n_in`` features and ``n_out`` classes.

    With ``network.from_nir`` the layers, node models and initial weights come
    from that NIR graph (:mod:`npsim.experiment.nir`); its ``init`` then returns
    the graph's weights (and R = I) instead of drawing them.
    """
    nc = cfg.network
    base, dec_rule = split_rule_name(cfg.rule.name)
    dec = dec_rule if nc.decorrelate is None else nc.decorrelate
    if nc.from_nir is not None:
        from .nir import pretrained_network

        net = pretrained_network(nc.from_nir, n_in, n_out, loss=make_loss(nc.loss), simulation=nc.simulation,
                                 decorrelate=dec, noise=nc.noise,
                                 output_noise=nc.noise if cfg.rule.noise == "intrinsic" else None)
    else:
        net = _network_from_keys(cfg, n_in, n_out, dec)
    return _checked(cfg, net)


def with_substrate(cfg: Config, net: Network) -> Network:
    """``net`` as the config's [substrate] runs it: unchanged for npsim, else a SubstrateNetwork."""
    sc = cfg.substrate
    if sc.name == "npsim":  # the other keys are Brian2's; kept, so that a config switches substrates in one key
        return net
    if cfg.backend != "numpy":
        raise IncompatibleSettings(f"substrate 'brian2' runs on the host: set backend = 'numpy' (got "
                                   f"'{cfg.backend}')")
    if cfg.train.monitor is not None:
        raise IncompatibleSettings("train.monitor records npsim's own simulation; substrate 'brian2' is not "
                                   "recorded: remove [train.monitor] (on the command line: --unset train.monitor)")
    # evaluate in passes as large as a training update's, whose Brian2 network is then built already
    rows = cfg.train.batch_size * (1 + (cfg.rule.perturbations if split_rule_name(cfg.rule.name)[0] != "wp" else 0))
    substrate = Brian2Substrate(net, perturbation=sc.perturbation, method=sc.method, target=sc.target,
                                eval_batch_size=rows)
    return SubstrateNetwork(net, substrate)


def _network_from_keys(cfg: Config, n_in: int, n_out: int, dec: bool) -> Network:
    """The network of the keys network.conv, hidden, node, node_params, output and output_params."""
    nc = cfg.network
    n_hidden = len(nc.conv) + len(nc.hidden)
    nodes = nc.node if isinstance(nc.node, list) else [nc.node] * n_hidden
    hidden_nodes = [make_node(nodes[i], **nc.node_params) for i in range(n_hidden)]
    layers = []
    if nc.conv:
        shape = _input_shape(cfg, n_in)
        for spec, node in zip(nc.conv, hidden_nodes):
            layers.append(Conv2D.from_spec(shape, spec, node, decorrelate=dec, noise=nc.noise))
            shape = layers[-1].out_shape
        n_in = layers[-1].n_out
    sizes = [n_in, *nc.hidden, n_out]
    for i in range(len(sizes) - 1):
        if i < len(nc.hidden):
            node, noise = hidden_nodes[len(nc.conv) + i], nc.noise
        else:  # the output's own noise is what intrinsic-noise learning measures there
            node, noise = make_node(nc.output, **nc.output_params), nc.noise if cfg.rule.noise == "intrinsic" else None
        if noise is not None and node.temporal:
            raise IncompatibleSettings(
                f"network.noise: the time-stepped node model {node.name!r} takes no activity noise; give it "
                f"noise with its own 'membrane_noise' parameter (network.node_params)")
        layers.append(Dense(sizes[i], sizes[i + 1], node, decorrelate=dec, noise=noise))
    return Network(layers, make_loss(nc.loss), simulation=nc.simulation)


def _checked(cfg: Config, net: Network) -> Network:
    """``net``, once the settings that must fit it (encoding, freeze, monitor) are checked."""
    if net.temporal and net.simulation.stochastic_input and cfg.data.normalize != "unit":
        raise IncompatibleSettings(f"network.simulation.encoding = '{net.simulation.encoding}' reads inputs as spike "
                                   f"probabilities in [0, 1]; set data.normalize = 'unit'")
    bad = [i for i in cfg.train.freeze if not 0 <= i < net.n_layers]
    if bad:
        raise IncompatibleSettings(f"train.freeze: no layer {bad[0]}; the network has layers 0 to "
                                   f"{net.n_layers - 1}")
    mon = cfg.train.monitor
    if mon is not None and not net.temporal:
        raise IncompatibleSettings("train.monitor records spikes and membrane potentials of time-stepped layers; "
                                   "this network has none, so it would record nothing: remove [train.monitor] "
                                   "(on the command line: --unset train.monitor)")
    if mon is not None:
        temporal = [i for i, layer in enumerate(net.layers) if layer.node.temporal]
        bad = [l for l in mon.layers if l not in temporal]
        if bad:
            raise IncompatibleSettings(f"train.monitor.layers: {bad} are not temporal layers; temporal layers: "
                                       f"{temporal}")
    return net


def _check_decorrelation_rows(cfg: Config, net: Network, rule) -> None:
    """rule.decorrelation_rows, where a config sets it to a number, must subsample some layer's rows, else it
    does nothing (the default, "auto", subsamples where there are more rows)."""
    rows = cfg.rule.decorrelation_rows
    if rows in ("all", "auto") or not isinstance(rule, Decorrelate):
        return
    per_layer = [cfg.train.batch_size * (layer.n_units // layer.channels if isinstance(layer, Conv2D) else 1)
                 for i, layer in enumerate(net.layers) if layer.decorrelate]
    if per_layer and rows >= max(per_layer):
        raise IncompatibleSettings(
            f"rule.decorrelation_rows = {rows} is not fewer than the rows an update has ({max(per_layer)}: "
            f"train.batch_size {cfg.train.batch_size}" + (", times the positions of a convolution" if any(
                isinstance(layer, Conv2D) for layer in net.layers) else "") + "), so it would change nothing; "
            "lower it or leave it out")


def _input_shape(cfg: Config, n_in: int) -> tuple[int, int, int]:
    """(C, H, W) of the input images: network.input_shape, else the data set's known image shape."""
    shape = cfg.network.input_shape
    if shape is None:
        try:
            known = DATASETS[canonical_name(cfg.data.name)].shape
        except ValueError:
            known = None
        if known is None:
            raise IncompatibleSettings(f"network.conv needs network.input_shape = [C, H, W] for data "
                                       f"'{cfg.data.name}'")
        shape = (1, *known) if len(known) == 2 else known
    shape = tuple(int(v) for v in shape)
    if int(np.prod(shape)) != n_in:
        raise IncompatibleSettings(f"network.input_shape {list(shape)} has {int(np.prod(shape))} values but the "
                                   f"data have {n_in} features")
    return shape


def build(cfg: Config, *, data: Dataset | None = None) -> Experiment:
    """Build data, network, rule and optimizer from a validated config (IncompatibleSettings on bad combinations)."""
    be = get_backend(cfg.backend, cfg.dtype)
    ds = data if data is not None else load_dataset(cfg.data.name, cfg.data.path, n_train=cfg.data.n_train,
                                                    normalize=cfg.data.normalize, validation=cfg.data.validation,
                                                    pool=cfg.data.pool)
    net = with_substrate(cfg, build_network(cfg, ds.n_features, ds.n_classes))
    rule = rule_from_config(cfg.rule)
    rule.check(net)
    if cfg.train.batch_size > ds.n_train:
        raise IncompatibleSettings(f"train.batch_size {cfg.train.batch_size} exceeds the {ds.n_train} training "
                                   f"samples")
    _check_decorrelation_rows(cfg, net, rule)
    check_memory(estimate_memory(net, rule, batch_size=cfg.train.batch_size, n_train=ds.n_train, n_test=ds.n_test,
                                 n_features=ds.n_features, dtype=cfg.dtype), f"{cfg.name} ({net.describe()})")
    oc = cfg.optimizer
    lr = oc.lr
    if oc.schedule == "cosine":
        lr = cosine_decay(oc.lr, cfg.train.epochs * (ds.n_train // cfg.train.batch_size), oc.final_lr_fraction)
    settings = OPTIMIZER_SETTINGS[oc.name]  # the optimizer's own settings, read off the [optimizer] table
    opt = make_optimizer(oc.name, lr=lr, **{k: getattr(oc, k) for k in settings.model_fields if hasattr(oc, k)})
    ex = Experiment(cfg, be, ds, net, rule, opt)
    # data go to the backend's device once
    ex.x_train, ex.y_train = be.asarray(ds.x_train), be.asarray(ds.y_train, dtype=ds.y_train.dtype)
    ex.x_test, ex.y_test = be.asarray(ds.x_test), be.asarray(ds.y_test, dtype=ds.y_test.dtype)
    return ex
