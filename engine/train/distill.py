"""Latent consistency distillation of a preview LoRA (LCM-LoRA's recipe, for flow-matching models).

Teacher: the base model (adapters off) with classifier-free guidance, a multi-step solver of its
probability-flow ODE: `skip` Euler steps along a `teacher_steps` grid of shifted sigmas. Student: the base
model plus the LoRA, no guidance. The student's clean-latent estimate at the higher noise level must
equal its own (stop-gradient) estimate at the teacher's lower-noise point: skipping-step consistency,
guidance folded in. The preview then renders in `preview_steps` consistency steps without CFG, from the
shot's own noise, so it shows the composition the final render will have.

    reel distill-preview --base shapes --data DATASET --out preview.safetensors
"""

from __future__ import annotations

import torch

from reel.engine.sampling import cfg_combine, shifted_sigmas
from reel.engine.train.stream import sample_index, step_generator


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    return (torch.sqrt((a.float() - b.float()) ** 2 + c**2) - c).mean()


def consistency_loss_at(trainer, step: int) -> float:
    """One optimisation step of consistency distillation; returns the loss."""
    cfg, tr, comps = trainer.cfg, trainer.comps.transformer, trainer.comps
    grid = torch.cat([shifted_sigmas(cfg.teacher_steps, trainer.shift), torch.zeros(1)])  # (T + 1,) high -> 0
    guidance = cfg.teacher_guidance or float(trainer.model.defaults["guidance"])
    n_items = len(trainer.items) * cfg.repeats
    per_step = cfg.batch_size * cfg.grad_accum
    total = 0.0

    def v(x, sigma, text):  # the transformer's flow velocity at noise level sigma
        t = torch.full((x.shape[0],), sigma * 1000.0, device=x.device)
        with trainer.autocast():
            return tr(hidden_states=x.to(comps.dtype), timestep=t, encoder_hidden_states=text,
                      return_dict=False)[0].float()

    for micro in range(per_step):
        g = step_generator(cfg.seed, step, micro)
        idx = sample_index(cfg.seed, step * per_step + micro, n_items) % len(trainer.items)
        x0 = trainer.latents[idx][None].to(trainer.device)  # (1, C, F', H', W')
        cond = trainer.text[trainer.items[idx].caption][None]  # (1, L, D)
        uncond = trainer.text[""][None]
        n = int(torch.randint(0, cfg.teacher_steps - cfg.skip + 1, (), generator=g))
        s_hi, s_lo = float(grid[n]), float(grid[min(n + cfg.skip, cfg.teacher_steps)])
        noise = torch.randn(x0.shape, generator=g).to(trainer.device)
        x_hi = (1 - s_hi) * x0 + s_hi * noise
        with torch.no_grad():
            # teacher: base model with guidance, `skip` Euler steps of its ODE along the grid from s_hi to s_lo
            x_lo = x_hi
            tr.disable_lora()
            for j in range(n, min(n + cfg.skip, cfg.teacher_steps)):
                a, b = float(grid[j]), float(grid[j + 1])
                both = v(torch.cat([x_lo, x_lo]), a, torch.cat([cond, uncond]))  # (2, C, F', H', W')
                x_lo = x_lo + (b - a) * cfg_combine(both[:1], both[1:], guidance)
            tr.enable_lora()
            # target: the student's own clean estimate at the lower noise level (x0 = x at sigma 0)
            target = x_lo - s_lo * v(x_lo, s_lo, cond) if s_lo > 0 else x_lo
        student = x_hi - s_hi * v(x_hi, s_hi, cond)  # (1, C, F', H', W')
        loss = pseudo_huber(student, target, cfg.huber_c) / per_step
        loss.backward()
        total += float(loss.detach())
    trainer.optimizer_step()
    return total
