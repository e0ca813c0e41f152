"""Models a student writes that the lab's own never are, as the source of one file (`strangers.py`): the
installed-wheel test runs every command on each, the export test refuses the one that branches on its input."""

import textwrap

STRANGERS = textwrap.dedent(
    '''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class OwnWeight(nn.Module):
        """A weight of its own used through F.conv2d."""

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 1, 3, 3) * 0.3)
            self.c2 = nn.Conv2d(8, 16, 3, stride=2)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            x = F.relu(F.conv2d(x, self.weight, padding=1))
            return self.head(F.relu(self.c2(x)).mean((2, 3)))


    def Grouped():
        """GroupNorm and SiLU, as modern nets write them."""
        return nn.Sequential(nn.Conv2d(1, 8, 3), nn.GroupNorm(2, 8), nn.SiLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3), nn.GroupNorm(4, 16), nn.SiLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


    def Mlp():
        """No convolution at all."""
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


    class SqueezeExcite(nn.Module):
        """A squeeze-excite gate: a global pooled gate multiplies the map."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, stride=2)
            self.squeeze = nn.Linear(8, 4)
            self.excite = nn.Linear(4, 8)
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            x = F.relu(self.conv(x))
            gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3))))))
            x = x * gate[:, :, None, None]
            return self.head(x.mean((2, 3)))


    def Decoder():
        """A transpose-convolution head: down by 2, up by 2, then classified."""
        return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                             nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 10))


    class Branchy(nn.Module):
        """Data-dependent control flow: which head depends on the image."""

        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 10, 28)
            self.b = nn.Conv2d(1, 10, 28)

        def forward(self, x):
            if x.mean() > 0:
                return self.a(x).flatten(1)
            return self.b(x).flatten(1)
    '''
)
