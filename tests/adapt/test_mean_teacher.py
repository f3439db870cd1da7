"""Mean teacher: the teacher is the student's moving average, and the consistency pulls the student
towards the teacher's predictions on target images."""

import torch

from tests.adapt.test_strategies import _net
from tests.adapt.test_uda import CPU, _batches
from tl_med.adapt.mean_teacher import MeanTeacherLoss


def test_the_teacher_follows_the_student_by_ema_and_gets_no_gradient():
    student = _net("batch")
    loss_fn = MeanTeacherLoss(student, _batches(n=2, shift=1.0), CPU, weight=1.0, ema=0.9, rampup=1)
    teacher_before = [p.detach().clone() for p in loss_fn.teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.5)
    loss = loss_fn(student)
    assert loss.requires_grad and float(loss.detach()) >= 0
    loss.backward()
    assert all(p.grad is None for p in loss_fn.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for before, after, s in zip(teacher_before, loss_fn.teacher.parameters(), student.parameters()):
        assert torch.allclose(after, 0.9 * before + 0.1 * s.detach(), atol=1e-6)


def test_consistency_ramps_up_and_training_on_it_lowers_it():
    student = _net("batch")
    loss_fn = MeanTeacherLoss(student, _batches(n=3, shift=0.5), CPU, weight=10.0, ema=0.99, rampup=20, seed=1)
    assert loss_fn.ramp() < 0.01
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    values = []
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn(student)
        loss.backward()
        opt.step()
        values.append(float(loss.detach()) / max(loss_fn.ramp(), 1e-6) / 10.0)  # the consistency itself
    assert loss_fn.ramp() == 1.0
    assert sum(values[-5:]) / 5 < sum(values[20:25]) / 5  # the student agrees more with its teacher
    again = MeanTeacherLoss(_net("batch"), _batches(n=3, shift=0.5), CPU, weight=1.0, seed=1)
    assert torch.equal(again._view(torch.zeros(2, 1, 4, 4, 4)),
                       MeanTeacherLoss(_net("batch"), [], CPU, weight=1.0, seed=1)._view(torch.zeros(2, 1, 4, 4, 4)))
