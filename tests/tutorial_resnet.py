"""The tutorial's ResNet50, as published (../shared/seed), kept as the tests' reference.

Only the indentation lost in the article's layout is restored and ``ReLU(inplace=False)`` is
kept as written; the names (``extention``, ``stage1``...) are the tutorial's own, because
checkpoints trained with this code carry them.
"""

# ruff: noqa
import torch
from torch import nn


class Bottleneck(nn.Module):
    extention = 4

    def __init__(self, inplane, midplane, stride, downsample=None):
        super(Bottleneck, self).__init__()
        self.conv1 = nn.Conv2d(inplane, midplane, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(midplane)
        self.conv2 = nn.Conv2d(midplane, midplane, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(midplane)
        self.conv3 = nn.Conv2d(
            midplane, midplane * self.extention, kernel_size=1, stride=1, bias=False
        )
        self.bn3 = nn.BatchNorm2d(midplane * self.extention)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.relu(self.bn3(self.conv3(out)))
        if self.downsample != None:
            residual = self.downsample(x)
        out += residual
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        self.inplane = 64
        super(ResNet, self).__init__()
        self.block = block
        self.layers = layers
        self.conv1 = nn.Conv2d(3, self.inplane, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplane)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, padding=1, stride=2)
        self.stage1 = self.make_layer(self.block, 64, self.layers[0], stride=1)
        self.stage2 = self.make_layer(self.block, 128, self.layers[1], stride=2)
        self.stage3 = self.make_layer(self.block, 256, self.layers[2], stride=2)
        self.stage4 = self.make_layer(self.block, 512, self.layers[3], stride=2)
        self.avgpool = nn.AvgPool2d(7)
        self.fc = nn.Linear(512 * block.extention, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.maxpool(out)
        out = self.stage1(out)
        out = self.stage2(out)
        out = self.stage3(out)
        out = self.stage4(out)
        out = self.avgpool(out)
        out = torch.flatten(out, 1)
        out = self.fc(out)
        return out

    def make_layer(self, block, midplane, block_num, stride=1):
        block_list = []
        downsample = None
        if stride != 1 or self.inplane != midplane * block.extention:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplane,
                    midplane * block.extention,
                    stride=stride,
                    kernel_size=1,
                    bias=False,
                ),
                nn.BatchNorm2d(midplane * block.extention),
            )
        conv_block = block(self.inplane, midplane, stride=stride, downsample=downsample)
        block_list.append(conv_block)
        self.inplane = midplane * block.extention
        for i in range(1, block_num):
            block_list.append(block(self.inplane, midplane, stride=1))
        return nn.Sequential(*block_list)


def tutorial_resnet50():
    return ResNet(Bottleneck, [3, 4, 6, 3])
